// A closed-loop load generator for the sidecar's state API over HTTP and gRPC, used by
// bench/grpc_vs_http.py so both transports are driven by the same client stack (Go's net/http and
// grpc-go, the Go SDK's own), never the bottleneck on its own CPU.
//
//	load -mode grpc-get|grpc-save|http-get|http-save -addr 127.0.0.1:PORT -c N -d SECONDS
//
// N workers each loop one request at a time over keys k0..k999 of store "s" for SECONDS and the
// program prints {"requests", "errors", "seconds", "p50_us", "p99_us"}.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	common "github.com/dapr/dapr/pkg/proto/common/v1"
	runtime "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const keys = 1000

func main() {
	mode := flag.String("mode", "grpc-get", "grpc-get | grpc-save | http-get | http-save")
	addr := flag.String("addr", "127.0.0.1:50001", "sidecar address")
	workers := flag.Int("c", 1, "concurrent requests")
	seconds := flag.Float64("d", 5, "duration in seconds")
	valueSize := flag.Int("value", 1024, "bytes of the saved JSON value")
	flag.Parse()

	value := []byte(`{"data":"` + string(bytes.Repeat([]byte("a"), *valueSize-11)) + `"}`)
	var call func(worker, i int) error
	switch *mode {
	case "grpc-get", "grpc-save":
		conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			panic(err)
		}
		defer conn.Close()
		client := runtime.NewDaprClient(conn)
		if *mode == "grpc-get" {
			call = func(w, i int) error {
				_, err := client.GetState(context.Background(), &runtime.GetStateRequest{StoreName: "s", Key: fmt.Sprintf("k%d", i%keys)})
				return err
			}
		} else {
			call = func(w, i int) error {
				_, err := client.SaveState(context.Background(), &runtime.SaveStateRequest{StoreName: "s", States: []*common.StateItem{{Key: fmt.Sprintf("w%d", i%keys), Value: value}}})
				return err
			}
		}
	case "http-get", "http-save":
		transport := &http.Transport{MaxIdleConns: *workers, MaxIdleConnsPerHost: *workers, DisableCompression: true}
		client := &http.Client{Transport: transport}
		base := "http://" + *addr + "/v1.0/state/s"
		do := func(req *http.Request) error {
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode >= 300 && resp.StatusCode != 204 {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		}
		if *mode == "http-get" {
			call = func(w, i int) error {
				req, _ := http.NewRequest("GET", fmt.Sprintf("%s/k%d", base, i%keys), nil)
				return do(req)
			}
		} else {
			call = func(w, i int) error {
				body := append(append([]byte(fmt.Sprintf(`[{"key":"w%d","value":`, i%keys)), value...), []byte("}]")...)
				req, _ := http.NewRequest("POST", base, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				return do(req)
			}
		}
	default:
		panic("unknown mode " + *mode)
	}

	// One warm-up call per worker opens its connection before the clock starts.
	for w := 0; w < *workers; w++ {
		_ = call(w, w)
	}
	var requests, errors atomic.Int64
	latencies := make([][]time.Duration, *workers)
	deadline := time.Now().Add(time.Duration(*seconds * float64(time.Second)))
	started := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; time.Now().Before(deadline); i += *workers {
				t := time.Now()
				if err := call(w, i); err != nil {
					errors.Add(1)
					continue
				}
				latencies[w] = append(latencies[w], time.Since(t))
				requests.Add(1)
			}
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(started).Seconds()
	all := []time.Duration{}
	for _, l := range latencies {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(p*float64(len(all)-1))].Microseconds())
	}
	out, _ := json.Marshal(map[string]any{
		"requests": requests.Load(), "errors": errors.Load(), "seconds": elapsed,
		"p50_us": pct(0.50), "p99_us": pct(0.99),
	})
	fmt.Fprintln(os.Stdout, string(out))
}
