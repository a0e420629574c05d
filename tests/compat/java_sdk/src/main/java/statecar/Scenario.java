// The compat scenario, driven through the official Dapr Java SDK (io.dapr:dapr-sdk) over gRPC.
//
//   java -cp ... statecar.Scenario STORE RUN
//
// Run by tests/compat/test_java_sdk.py with only DAPR_GRPC_PORT / DAPR_HTTP_PORT (and
// DAPR_API_TOKEN) set. Prints the same JSON report as python_sdk/scenario.py, step for step,
// so tests/compat/grpc_scenario.py checks every SDK alike. Values are byte[]: the SDK's default
// serializer passes byte arrays through unchanged.
package statecar;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.dapr.client.DaprClient;
import io.dapr.client.DaprClientBuilder;
import io.dapr.client.DaprPreviewClient;
import io.dapr.client.domain.ComponentMetadata;
import io.dapr.client.domain.DaprMetadata;
import io.dapr.client.domain.QueryStateItem;
import io.dapr.client.domain.State;
import io.dapr.client.domain.StateOptions;
import io.dapr.client.domain.TransactionalStateOperation;
import io.dapr.exceptions.DaprErrorDetails;
import io.dapr.exceptions.DaprException;
import io.dapr.utils.TypeRef;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;

public final class Scenario {
  // The SDK tags values contentType application/json, so this is JSON (grpc_scenario.JSON_RAW):
  // a float that must not be rounded, HTML that must not be escaped, keys not to be re-ordered.
  static final byte[] RAW =
      "{\"price\": 1.10, \"html\": \"<&>\", \"z\": 1, \"a\": 2}".getBytes(StandardCharsets.UTF_8);
  static final StateOptions FIRST_WRITE = new StateOptions(null, StateOptions.Concurrency.FIRST_WRITE);

  final Map<String, Object> steps = new LinkedHashMap<>();
  final String store;
  final String run;
  final DaprClient client;

  Scenario(DaprClient client, String store, String run) {
    this.client = client;
    this.store = store;
    this.run = run;
  }

  static String b64(byte[] data) {
    return data == null ? "" : Base64.getEncoder().encodeToString(data);
  }

  static String orEmpty(String s) {
    return s == null ? "" : s;
  }

  String key(String name) {
    return run + "-" + name;
  }

  byte[] doc(String team, int n) {
    return String.format("{\"run\":\"%s\",\"team\":\"%s\",\"n\":%d}", run, team, n)
        .getBytes(StandardCharsets.UTF_8);
  }

  Object step(String name, Callable<Object> call) {
    Map<String, Object> result = new LinkedHashMap<>();
    try {
      Object value = call.call();
      result.put("ok", true);
      result.put("value", value);
      steps.put(name, result);
      return value;
    } catch (DaprException e) {
      Map<String, Object> error = new LinkedHashMap<>();
      error.put("code", e.getErrorCode());
      String reason = e.getErrorDetails() == null ? null
          : e.getErrorDetails().get(DaprErrorDetails.ErrorDetailType.ERROR_INFO, "reason", TypeRef.STRING);
      error.put("reason", orEmpty(reason));
      error.put("message", e.getMessage());
      result.put("ok", false);
      result.put("error", error);
      steps.put(name, result);
      return null;
    } catch (Exception e) {
      throw new RuntimeException(e);
    }
  }

  Map<String, String> get(String name) {
    State<byte[]> state = client.getState(store, key(name), byte[].class).block();
    Map<String, String> out = new LinkedHashMap<>();
    out.put("data", b64(state.getValue()));
    out.put("etag", orEmpty(state.getEtag()));
    return out;
  }

  List<Map<String, String>> bulk(String... names) {
    List<String> keys = new ArrayList<>();
    for (String n : names) {
      keys.add(key(n));
    }
    List<Map<String, String>> out = new ArrayList<>();
    for (State<byte[]> s : client.getBulkState(store, keys, byte[].class).block()) {
      Map<String, String> item = new LinkedHashMap<>();
      item.put("key", s.getKey());
      item.put("data", b64(s.getValue()));
      item.put("etag", orEmpty(s.getEtag()));
      item.put("error", orEmpty(s.getError()));
      out.add(item);
    }
    return out;
  }

  static TransactionalStateOperation<byte[]> upsert(String key, byte[] value, String etag) {
    return new TransactionalStateOperation<>(
        TransactionalStateOperation.OperationType.UPSERT, new State<>(key, value, etag));
  }

  void run(DaprPreviewClient preview) {
    step("save", () -> client.saveState(store, key("raw"), RAW).block());
    step("get", () -> get("raw"));
    String stale = get("raw").get("etag");
    step("firstWriteCurrent", () -> client.saveState(store, key("raw"), stale, "\"v2\"".getBytes(), FIRST_WRITE).block());
    step("firstWriteStale", () -> client.saveState(store, key("raw"), stale, "\"v3\"".getBytes(), FIRST_WRITE).block());
    step("afterStale", () -> get("raw"));
    step("malformedEtag", () -> client.saveState(store, key("raw"), "not-an-etag", "\"v4\"".getBytes(), null).block());
    step("bulkSave", () -> client.saveBulkState(store, List.of(
        new State<>(key("b1"), "{\"n\":1}".getBytes(), (String) null),
        new State<>(key("b2"), "\"two\"".getBytes(), (String) null))).block());
    step("bulkGet", () -> bulk("b1", "missing", "b2"));
    String current = get("raw").get("etag");
    step("deleteStale", () -> client.deleteState(store, key("raw"), stale, null).block());
    step("deleteCurrent", () -> client.deleteState(store, key("raw"), current, null).block());
    step("afterDelete", () -> get("raw"));
    step("transaction", () -> client.executeStateTransaction(store, List.of(
        upsert(key("t1"), doc("blue", 1), null),
        upsert(key("t2"), doc("red", 2), null),
        new TransactionalStateOperation<>(TransactionalStateOperation.OperationType.DELETE,
            new State<byte[]>(key("b1"))))).block());
    step("afterTransaction", () -> bulk("t1", "t2", "b1"));
    String t1 = get("t1").get("etag");
    step("rewrite", () -> client.saveState(store, key("t1"), doc("blue", 10)).block());
    step("staleTransaction", () -> client.executeStateTransaction(store, List.of(
        upsert(key("t3"), doc("green", 3), null),
        upsert(key("t2"), doc("red", 20), null),
        upsert(key("t1"), doc("blue", 11), t1))).block());
    step("afterStaleTransaction", () -> bulk("t1", "t2", "t3"));
    step("metadata", () -> {
      DaprMetadata m = client.getMetadata().block();
      List<Map<String, Object>> components = new ArrayList<>();
      for (ComponentMetadata c : m.getComponents()) {
        Map<String, Object> item = new LinkedHashMap<>();
        List<String> capabilities = new ArrayList<>(c.getCapabilities());
        capabilities.sort(Comparator.naturalOrder());
        item.put("name", c.getName());
        item.put("type", c.getType());
        item.put("capabilities", capabilities);
        components.add(item);
      }
      components.sort(Comparator.comparing(c -> (String) c.get("name")));
      Map<String, Object> out = new LinkedHashMap<>();
      out.put("id", m.getId());
      out.put("components", components);
      return out;
    });
    step("query", () -> {
      String query = String.format(
          "{\"filter\":{\"AND\":[{\"EQ\":{\"run\":\"%s\"}},{\"IN\":{\"team\":[\"blue\",\"red\"]}}]},"
              + "\"sort\":[{\"key\":\"n\",\"order\":\"DESC\"}]}", run);
      List<Map<String, String>> out = new ArrayList<>();
      for (QueryStateItem<byte[]> r : preview.queryState(store, query, byte[].class).block().getResults()) {
        Map<String, String> item = new LinkedHashMap<>();
        item.put("key", r.getKey());
        item.put("data", b64(r.getValue()));
        item.put("etag", orEmpty(r.getEtag()));
        out.add(item);
      }
      return out;
    });
  }

  public static void main(String[] args) throws Exception {
    try (DaprClient client = new DaprClientBuilder().build();
        DaprPreviewClient preview = new DaprClientBuilder().buildPreviewClient()) {
      Scenario scenario = new Scenario(client, args[0], args[1]);
      scenario.run(preview);
      Map<String, Object> report = new LinkedHashMap<>();
      report.put("run", args[1]);
      report.put("store", args[0]);
      report.put("steps", scenario.steps);
      System.out.println(new ObjectMapper().writeValueAsString(report));
    }
    System.exit(0);  // the SDK's gRPC/Netty threads would keep the JVM alive
  }
}
