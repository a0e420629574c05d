// The compat scenario, driven through the official Dapr Go SDK (github.com/dapr/go-sdk) over gRPC.
//
//	scenario STORE RUN
//
// Run by tests/compat/test_go_sdk.py with only DAPR_GRPC_PORT / DAPR_HTTP_PORT (and
// DAPR_API_TOKEN) set. Prints the same JSON report as python_sdk/scenario.py, step for step,
// so tests/compat/grpc_scenario.py checks both.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// Not JSON, not UTF-8: a NUL, a lone 0xFF, and JSON-looking text whose float must not be rounded.
var raw = []byte("\x00\xff{\"price\": 1.10, \"html\": \"<&>\"}\n")

type result struct {
	Ok    bool           `json:"ok"`
	Value any            `json:"value,omitempty"`
	Error map[string]any `json:"error,omitempty"`
}

func b64(data []byte) string { return base64.StdEncoding.EncodeToString(data) }

func main() {
	store, run := os.Args[1], os.Args[2]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client, err := dapr.NewClient()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer client.Close()

	steps := map[string]result{}
	step := func(name string, call func() (any, error)) any {
		value, err := call()
		if err != nil {
			failure := map[string]any{"code": "UNKNOWN", "reason": "", "message": err.Error()}
			// FromError finds the gRPC status inside the SDK's wrapping ("error saving state: …").
			if st, _ := status.FromError(err); st != nil {
				failure["code"] = codeName(st.Code().String())
				failure["message"] = st.Message()
				for _, d := range st.Details() {
					if info, ok := d.(*errdetails.ErrorInfo); ok {
						failure["reason"] = info.GetReason()
					}
				}
			}
			steps[name] = result{Ok: false, Error: failure}
			return nil
		}
		steps[name] = result{Ok: true, Value: value}
		return value
	}
	key := func(name string) string { return run + "-" + name }
	doc := func(team string, n int) []byte {
		return []byte(fmt.Sprintf(`{"run":"%s","team":"%s","n":%d}`, run, team, n))
	}
	get := func(name string) (any, error) {
		item, err := client.GetState(ctx, store, key(name), nil)
		if err != nil {
			return nil, err
		}
		return map[string]string{"data": b64(item.Value), "etag": item.Etag}, nil
	}
	etagOf := func(name string) string {
		item, err := client.GetState(ctx, store, key(name), nil)
		if err != nil {
			return ""
		}
		return item.Etag
	}
	bulk := func(names ...string) (any, error) {
		keys := make([]string, len(names))
		for i, n := range names {
			keys[i] = key(n)
		}
		items, err := client.GetBulkState(ctx, store, keys, nil, 2)
		if err != nil {
			return nil, err
		}
		out := []map[string]string{}
		for _, i := range items {
			out = append(out, map[string]string{"key": i.Key, "data": b64(i.Value), "etag": i.Etag, "error": i.Error})
		}
		return out, nil
	}
	none := func(err error) (any, error) { return nil, err }
	firstWrite := dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite)

	step("save", func() (any, error) { return none(client.SaveState(ctx, store, key("raw"), raw, nil)) })
	step("get", func() (any, error) { return get("raw") })
	stale := etagOf("raw")
	step("firstWriteCurrent", func() (any, error) {
		return none(client.SaveStateWithETag(ctx, store, key("raw"), []byte(`"v2"`), stale, nil, firstWrite))
	})
	step("firstWriteStale", func() (any, error) {
		return none(client.SaveStateWithETag(ctx, store, key("raw"), []byte(`"v3"`), stale, nil, firstWrite))
	})
	step("afterStale", func() (any, error) { return get("raw") })
	step("malformedEtag", func() (any, error) {
		return none(client.SaveStateWithETag(ctx, store, key("raw"), []byte(`"v4"`), "not-an-etag", nil))
	})
	step("bulkSave", func() (any, error) {
		return none(client.SaveBulkState(ctx, store,
			&dapr.SetStateItem{Key: key("b1"), Value: []byte(`{"n":1}`)},
			&dapr.SetStateItem{Key: key("b2"), Value: []byte(`"two"`)}))
	})
	step("bulkGet", func() (any, error) { return bulk("b1", "missing", "b2") })
	current := etagOf("raw")
	step("deleteStale", func() (any, error) {
		return none(client.DeleteStateWithETag(ctx, store, key("raw"), &dapr.ETag{Value: stale}, nil, nil))
	})
	step("deleteCurrent", func() (any, error) {
		return none(client.DeleteStateWithETag(ctx, store, key("raw"), &dapr.ETag{Value: current}, nil, nil))
	})
	step("afterDelete", func() (any, error) { return get("raw") })
	upsert := func(name string, value []byte, etag *dapr.ETag) *dapr.StateOperation {
		return &dapr.StateOperation{Type: dapr.StateOperationTypeUpsert, Item: &dapr.SetStateItem{Key: key(name), Value: value, Etag: etag}}
	}
	step("transaction", func() (any, error) {
		return none(client.ExecuteStateTransaction(ctx, store, nil, []*dapr.StateOperation{
			upsert("t1", doc("blue", 1), nil),
			upsert("t2", doc("red", 2), nil),
			{Type: dapr.StateOperationTypeDelete, Item: &dapr.SetStateItem{Key: key("b1")}},
		}))
	})
	step("afterTransaction", func() (any, error) { return bulk("t1", "t2", "b1") })
	t1 := etagOf("t1")
	step("rewrite", func() (any, error) { return none(client.SaveState(ctx, store, key("t1"), doc("blue", 10), nil)) })
	step("staleTransaction", func() (any, error) {
		return none(client.ExecuteStateTransaction(ctx, store, nil, []*dapr.StateOperation{
			upsert("t3", doc("green", 3), nil),
			upsert("t2", doc("red", 20), nil),
			upsert("t1", doc("blue", 11), &dapr.ETag{Value: t1}),
		}))
	})
	step("afterStaleTransaction", func() (any, error) { return bulk("t1", "t2", "t3") })
	step("metadata", func() (any, error) {
		m, err := client.GetMetadata(ctx)
		if err != nil {
			return nil, err
		}
		components := []map[string]any{}
		for _, c := range m.RegisteredComponents {
			capabilities := append([]string{}, c.Capabilities...)
			sort.Strings(capabilities)
			components = append(components, map[string]any{"name": c.Name, "type": c.Type, "capabilities": capabilities})
		}
		sort.Slice(components, func(i, j int) bool { return components[i]["name"].(string) < components[j]["name"].(string) })
		return map[string]any{"id": m.ID, "components": components}, nil
	})
	step("query", func() (any, error) {
		query := fmt.Sprintf(`{"filter":{"AND":[{"EQ":{"run":"%s"}},{"IN":{"team":["blue","red"]}}]},"sort":[{"key":"n","order":"DESC"}]}`, run)
		response, err := client.QueryStateAlpha1(ctx, store, query, nil)
		if err != nil {
			return nil, err
		}
		out := []map[string]string{}
		for _, r := range response.Results {
			out = append(out, map[string]string{"key": r.Key, "data": b64(r.Value), "etag": r.Etag})
		}
		return out, nil
	})

	report, _ := json.Marshal(map[string]any{"run": run, "store": store, "steps": steps})
	fmt.Println(string(report))
}

// codeName turns grpc-go's "Aborted" into the canonical "ABORTED" the other runners print.
func codeName(name string) string {
	out := []byte{}
	for i, c := range []byte(name) {
		if c >= 'A' && c <= 'Z' && i > 0 {
			out = append(out, '_')
		}
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		out = append(out, c)
	}
	return string(out)
}
