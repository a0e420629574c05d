// The compat scenario through the official Dapr JavaScript SDK (@dapr/dapr, pinned in
// package.json) in its gRPC mode, printing the same JSON report as the Python, Go and Java
// runners (tests/compat/grpc_scenario.py checks them all).
//
//   node grpc_scenario.js STORE RUN
//
// Only DAPR_GRPC_PORT / DAPR_HTTP_PORT (and DAPR_API_TOKEN) are set. What this SDK changes,
// and tests/compat/test_js_sdk_grpc.py accounts for:
//   - values are strings (sent as UTF-8) and come back JSON-parsed when they parse: the report
//     shows them as the SDK hands them over (strings as they are, anything else re-stringified);
//   - get() returns no ETag, so ETags are read with getBulk();
//   - errors are ConnectErrors: the code is `Code[err.code]`, the ErrorInfo reason is read from
//     the raw google.rpc.ErrorInfo detail.
"use strict";

const { DaprClient, CommunicationProtocolEnum, StateConcurrencyEnum, LogLevel } = require("@dapr/dapr");
const { Code } = require("@connectrpc/connect");

const [STORE, RUN] = process.argv.slice(2);
// Not JSON, so the SDK hands it back as it is: a float that must not be rounded, HTML, non-ASCII.
const RAW_TEXT = 'price: 1.10 <&> ünïcødé\n';

const quiet = { error: () => {}, warn: () => {}, info: () => {}, verbose: () => {}, debug: () => {} };

function b64(text) {
  return Buffer.from(text, "utf-8").toString("base64");
}

function shown(value) {
  if (value === undefined || value === null) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

function codeName(code) {
  return (Code[code] || "Unknown").replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

// google.rpc.ErrorInfo field 1 (reason): tag 0x0a, a varint length, the UTF-8 text.
function reasonOf(err) {
  for (const detail of err.details || []) {
    if (detail.desc?.typeName === "google.rpc.ErrorInfo" || detail.type === "google.rpc.ErrorInfo") {
      const bytes = detail.value;
      if (bytes && bytes[0] === 0x0a) {
        let length = 0, shift = 0, i = 1;
        for (; i < bytes.length; i++) {
          length |= (bytes[i] & 0x7f) << shift;
          shift += 7;
          if ((bytes[i] & 0x80) === 0) { i++; break; }
        }
        return Buffer.from(bytes.slice(i, i + length)).toString("utf-8");
      }
    }
  }
  return "";
}

async function main() {
  const client = new DaprClient({
    communicationProtocol: CommunicationProtocolEnum.GRPC,
    daprPort: process.env.DAPR_GRPC_PORT,
    logger: { level: LogLevel.Error, service: quiet },
  });
  const steps = {};
  const step = async (name, call) => {
    try {
      const value = await call();
      steps[name] = { ok: true, value: value === undefined ? null : value };
      return value;
    } catch (err) {
      steps[name] = {
        ok: false,
        error: { code: codeName(err.code), reason: reasonOf(err), message: err.rawMessage ?? String(err) },
      };
      return null;
    }
  };
  const key = (name) => `${RUN}-${name}`;
  const doc = (team, n) => `{"run":"${RUN}","team":"${team}","n":${n}}`;
  const bulk = async (...names) =>
    (await client.state.getBulk(STORE, names.map(key), { parallelism: 2 })).map((i) => ({
      key: i.key, data: b64(shown(i.data)), etag: i.etag || "", error: "",
    }));
  const get = async (name) => {
    const [item] = await bulk(name);
    return { data: item.data, etag: item.etag };
  };
  const firstWrite = { concurrency: StateConcurrencyEnum.CONCURRENCY_FIRST_WRITE };

  await step("save", () => client.state.save(STORE, [{ key: key("raw"), value: RAW_TEXT }]).then(() => null));
  const first = await step("get", () => get("raw"));
  const stale = first ? first.etag : "";
  await step("firstWriteCurrent", () =>
    client.state.save(STORE, [{ key: key("raw"), value: '"v2"', etag: stale, options: firstWrite }]).then(() => null));
  await step("firstWriteStale", () =>
    client.state.save(STORE, [{ key: key("raw"), value: '"v3"', etag: stale, options: firstWrite }]).then(() => null));
  await step("afterStale", () => get("raw"));
  await step("malformedEtag", () =>
    client.state.save(STORE, [{ key: key("raw"), value: '"v4"', etag: "not-an-etag" }]).then(() => null));
  await step("bulkSave", () =>
    client.state.save(STORE, [{ key: key("b1"), value: '{"n":1}' }, { key: key("b2"), value: '"two"' }]).then(() => null));
  await step("bulkGet", () => bulk("b1", "missing", "b2"));
  const current = (await get("raw")).etag;
  await step("deleteStale", () => client.state.delete(STORE, key("raw"), { etag: stale }).then(() => null));
  await step("deleteCurrent", () => client.state.delete(STORE, key("raw"), { etag: current }).then(() => null));
  await step("afterDelete", () => get("raw"));
  await step("transaction", () =>
    client.state.transaction(STORE, [
      { operation: "upsert", request: { key: key("t1"), value: doc("blue", 1) } },
      { operation: "upsert", request: { key: key("t2"), value: doc("red", 2) } },
      { operation: "delete", request: { key: key("b1") } },
    ]).then(() => null));
  await step("afterTransaction", () => bulk("t1", "t2", "b1"));
  const t1 = (await get("t1")).etag;
  await step("rewrite", () => client.state.save(STORE, [{ key: key("t1"), value: doc("blue", 10) }]).then(() => null));
  await step("staleTransaction", () =>
    client.state.transaction(STORE, [
      { operation: "upsert", request: { key: key("t3"), value: doc("green", 3) } },
      { operation: "upsert", request: { key: key("t2"), value: doc("red", 20) } },
      { operation: "upsert", request: { key: key("t1"), value: doc("blue", 11), etag: t1 } },
    ]).then(() => null));
  await step("afterStaleTransaction", () => bulk("t1", "t2", "t3"));
  await step("metadata", async () => {
    const m = await client.metadata.get();
    return {
      id: m.id,
      components: m.components
        .map((c) => ({ name: c.name, type: c.type, capabilities: [...c.capabilities].sort() }))
        .sort((a, b) => a.name.localeCompare(b.name)),
    };
  });
  await step("query", async () => {
    const response = await client.state.query(STORE, {
      filter: { AND: [{ EQ: { run: RUN } }, { IN: { team: ["blue", "red"] } }] },
      sort: [{ key: "n", order: "DESC" }],
    });
    return response.results.map((r) => ({
      key: r.key, data: Buffer.from(r.data).toString("base64"), etag: r.etag,
    }));
  });
  await client.stop();
  process.stdout.write(JSON.stringify({ run: RUN, store: STORE, steps }) + "\n");
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
