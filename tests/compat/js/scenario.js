// Drives a running statecar sidecar with the official Dapr JavaScript SDK (@dapr/dapr, pinned in
// package.json) exactly as an application would, and prints ONE JSON report of every result on
// stdout. It asserts nothing itself: tests/compat/test_js_sdk.py reads the report and judges it.
//
// Environment (the SDK reads the first two itself, as it does in a pod):
//   DAPR_HTTP_PORT   the sidecar's HTTP port
//   DAPR_API_TOKEN   the token the SDK sends (in "wrong-token" mode: a token the sidecar rejects)
//   STORE            the state store (component) name
//   RUN              a unique prefix for every key this run writes
// Usage: node scenario.js [full|wrong-token]
//
// Quirks of @dapr/dapr 3.18.0 over HTTP this script works with (research A1):
//   - save/delete never throw; they return {error}. get/getBulk/transaction/query throw an Error whose
//     message is JSON {error, error_msg, status}.
//   - get returns only the body (the ETag header is dropped), so ETags come from a raw fetch.
//   - keys are not URL-encoded by the SDK, so this script uses URL-safe keys.
"use strict";

const {
  DaprClient,
  CommunicationProtocolEnum,
  StateConcurrencyEnum,
  StateConsistencyEnum,
  LogLevel,
} = require("@dapr/dapr");
const { Settings } = require("@dapr/dapr/utils/Settings.util");
const { SDK_VERSION } = require("@dapr/dapr/version");

const PORT = process.env.DAPR_HTTP_PORT;
const TOKEN = process.env.DAPR_API_TOKEN;
const STORE = process.env.STORE;
const RUN = process.env.RUN;
const MODE = process.argv[2] || "full";
const BASE = `http://127.0.0.1:${PORT}`;

// Keep stdout for the report: the SDK's own log lines go to stderr.
const stderrLogger = {
  error: (...a) => console.error("[sdk error]", ...a),
  warn: (...a) => console.error("[sdk warn]", ...a),
  info: (...a) => console.error("[sdk info]", ...a),
  verbose: () => {},
  debug: () => {},
};

function newClient() {
  // No host/port in code: the SDK resolves DAPR_HTTP_PORT and DAPR_API_TOKEN from the environment.
  return new DaprClient({
    communicationProtocol: CommunicationProtocolEnum.HTTP,
    logger: { level: LogLevel.Info, service: stderrLogger },
  });
}

// An SDK error, made JSON-friendly: the SDK packs {error, error_msg, status} into Error.message.
function describeError(e) {
  const message = e && e.message !== undefined ? String(e.message) : String(e);
  const out = { message };
  try {
    const parsed = JSON.parse(message);
    out.status = parsed.status;
    out.statusText = parsed.error;
    try {
      out.body = JSON.parse(parsed.error_msg);
    } catch (_e) {
      out.body = parsed.error_msg;
    }
  } catch (_e) {
    // not one of the SDK's HTTP errors (e.g. DAPR_SIDECAR_COULD_NOT_BE_STARTED)
  }
  return out;
}

// save/delete report failures as a return value, never by throwing.
function describeResult(result) {
  if (result && result.error !== undefined) {
    return { returned: "error", error: describeError(result.error) };
  }
  return { returned: result };
}

const report = { sdkVersion: SDK_VERSION, mode: MODE, store: STORE, run: RUN, steps: {} };

async function step(name, fn) {
  const started = Date.now();
  try {
    const value = await fn();
    report.steps[name] = { ok: true, value: value === undefined ? null : value, ms: Date.now() - started };
  } catch (e) {
    report.steps[name] = { ok: false, error: describeError(e), ms: Date.now() - started };
  }
}

// What the SDK cannot give: the ETag and metadata headers of a GET.
async function rawGet(key, token = TOKEN) {
  const headers = token === undefined ? {} : { "dapr-api-token": token };
  const res = await fetch(`${BASE}/v1.0/state/${STORE}/${encodeURIComponent(key)}`, { headers });
  return {
    status: res.status,
    etag: res.headers.get("etag"),
    ttlExpireTime: res.headers.get("metadata.ttlExpireTime"),
    body: await res.text(),
  };
}

async function etagOf(key) {
  const answer = await rawGet(key);
  if (answer.status !== 200 || !answer.etag) {
    throw new Error(`no etag for ${key}: ${JSON.stringify(answer)}`);
  }
  return answer.etag;
}

const k = (name) => `${RUN}-${name}`;
const FW = StateConcurrencyEnum.CONCURRENCY_FIRST_WRITE;
const STRONG = StateConsistencyEnum.CONSISTENCY_STRONG;

async function full() {
  const client = newClient();
  const etags = {};

  await step("start", () => client.start());
  await step("isHealthy", () => client.health.isHealthy());
  await step("metadata", () => client.metadata.get());

  // -- save / get / getBulk --------------------------------------------------------------------
  await step("save", async () =>
    describeResult(
      await client.state.save(
        STORE,
        [
          { key: k("a"), value: { name: "alpha", n: 1, nested: { list: [1, 2.5, "x"], none: null }, run: RUN } },
          { key: k("b"), value: "plain string with unicode: café ☕" },
          {
            key: k("ttl"),
            value: { n: 3, flag: true },
            options: { consistency: STRONG, concurrency: FW },
            metadata: { ttlInSeconds: "3600" },
          },
          { key: k("num"), value: 42 },
        ],
        { metadata: { partitionKey: "p1" } },
      ),
    ),
  );
  await step("getA", () => client.state.get(STORE, k("a")));
  await step("getB", () => client.state.get(STORE, k("b")));
  await step("getTtl", () => client.state.get(STORE, k("ttl"), { consistency: STRONG, metadata: { partitionKey: "p1" } }));
  await step("getNum", () => client.state.get(STORE, k("num")));
  await step("getMissing", () => client.state.get(STORE, k("missing")));
  await step("rawGetTtl", () => rawGet(k("ttl")));
  await step("getBulk", () => client.state.getBulk(STORE, [k("a"), k("missing"), k("b"), k("ttl")]));
  await step("getBulkWithOptions", () =>
    client.state.getBulk(STORE, [k("num"), k("a")], { parallelism: 3, metadata: { partitionKey: "p1" } }),
  );
  // The SDK puts keys into the URL unencoded; the WHATWG URL parser percent-encodes a space and
  // non-ASCII, and the sidecar must decode them back into the same key.
  await step("saveSpacedKey", async () =>
    describeResult(await client.state.save(STORE, [{ key: k("clé à espaces"), value: { spaced: true } }])),
  );
  await step("getSpacedKey", () => client.state.get(STORE, k("clé à espaces")));
  await step("bulkSpacedKey", () => client.state.getBulk(STORE, [k("clé à espaces")]));
  await step("deleteSpacedKey", async () => describeResult(await client.state.delete(STORE, k("clé à espaces"))));
  await step("getSpacedKeyAfterDelete", () => client.state.get(STORE, k("clé à espaces")));

  // first-write with no ETag on a key that now exists: the option must reach the sidecar.
  await step("saveFirstWriteOnExistingKey", async () =>
    describeResult(await client.state.save(STORE, [{ key: k("ttl"), value: { n: 4 }, options: { concurrency: FW } }])),
  );
  await step("getTtlAfterRefusedSave", () => client.state.get(STORE, k("ttl")));

  // -- ETags: save and delete with a stale, a garbage and the current ETag ---------------------
  await step("etagA1", async () => (etags.a1 = await etagOf(k("a"))));
  await step("saveWithCurrentEtag", async () =>
    describeResult(await client.state.save(STORE, [{ key: k("a"), value: { name: "alpha", n: 2, run: RUN }, etag: etags.a1 }])),
  );
  await step("etagA2", async () => (etags.a2 = await etagOf(k("a"))));
  await step("saveWithStaleEtag", async () =>
    describeResult(
      // No concurrency option: an ETag is still checked (last-write only means "no ETag needed").
      await client.state.save(STORE, [{ key: k("a"), value: { lost: true }, etag: etags.a1 }]),
    ),
  );
  await step("deleteWithStaleEtag", async () =>
    describeResult(await client.state.delete(STORE, k("a"), { etag: etags.a1, concurrency: FW, consistency: STRONG })),
  );
  await step("deleteWithGarbageEtag", async () =>
    describeResult(await client.state.delete(STORE, k("a"), { etag: "not-an-etag-this-store-issued" })),
  );
  await step("getAAfterRefusedDeletes", () => client.state.get(STORE, k("a")));
  await step("deleteWithCurrentEtag", async () =>
    describeResult(
      await client.state.delete(STORE, k("a"), {
        etag: etags.a2,
        concurrency: FW,
        consistency: STRONG,
        metadata: { partitionKey: "p1" },
      }),
    ),
  );
  await step("getAAfterDelete", () => client.state.get(STORE, k("a")));
  await step("deleteWithoutEtag", async () => describeResult(await client.state.delete(STORE, k("num"))));
  await step("getNumAfterDelete", () => client.state.get(STORE, k("num")));

  // -- transactions: ETag as {value}, all or nothing ------------------------------------------
  await step("txSeed", async () =>
    describeResult(await client.state.save(STORE, [{ key: k("t1"), value: { v: 1 } }, { key: k("t2"), value: { v: "x" } }])),
  );
  await step("etagT1", async () => (etags.t1 = await etagOf(k("t1"))));
  // No request metadata: the SDK sends "metadata": null.
  await step("txCommit", () =>
    client.state.transaction(STORE, [
      { operation: "upsert", request: { key: k("t1"), value: { v: 2 }, etag: { value: etags.t1 }, options: { concurrency: FW } } },
      { operation: "upsert", request: { key: k("t3"), value: { v: 3, list: ["a", "b"] } } },
      { operation: "delete", request: { key: k("t2") } },
    ]),
  );
  await step("txCommitGetT1", () => client.state.get(STORE, k("t1")));
  await step("txCommitGetT2", () => client.state.get(STORE, k("t2")));
  await step("txCommitGetT3", () => client.state.get(STORE, k("t3")));
  // A stale ETag in the middle: nothing of this transaction may apply.
  await step("txStale", () =>
    client.state.transaction(
      STORE,
      [
        { operation: "upsert", request: { key: k("t4"), value: { v: 4 } } },
        { operation: "upsert", request: { key: k("t1"), value: { v: 99 }, etag: { value: etags.t1 } } },
        { operation: "delete", request: { key: k("t3") } },
      ],
      { partitionKey: "p1" },
    ),
  );
  await step("txStaleGetT1", () => client.state.get(STORE, k("t1")));
  await step("txStaleGetT3", () => client.state.get(STORE, k("t3")));
  await step("txStaleGetT4", () => client.state.get(STORE, k("t4")));
  await step("etagT3", async () => (etags.t3 = await etagOf(k("t3"))));
  await step("txDeleteWithEtag", () =>
    client.state.transaction(STORE, [
      { operation: "delete", request: { key: k("t3"), etag: { value: etags.t3 }, options: { concurrency: FW } } },
    ]),
  );
  await step("txDeleteWithEtagGetT3", () => client.state.get(STORE, k("t3")));

  // -- query: filter / sort / page ------------------------------------------------------------
  const people = [
    ["q1", "CA", 5],
    ["q2", "WA", 3],
    ["q3", "OR", 9],
    ["q4", "CA", 1],
    ["q5", "WA", 7],
    ["q6", "CA", 4],
  ];
  await step("querySeed", async () =>
    describeResult(
      await client.state.save(
        STORE,
        people.map(([name, state, n]) => ({ key: k(name), value: { run: RUN, kind: "person", state, n, person: { org: `org-${n}` } } })),
      ),
    ),
  );
  const query = {
    filter: { AND: [{ EQ: { run: RUN } }, { EQ: { kind: "person" } }, { IN: { state: ["CA", "WA"] } }] },
    sort: [{ key: "n", order: "DESC" }],
    page: { limit: 2 },
  };
  await step("queryPages", async () => {
    const pages = [];
    let token;
    for (let i = 0; i < 10; i++) {
      const page = { ...query.page };
      if (token) page.token = token;
      const result = await client.state.query(STORE, { ...query, page });
      pages.push(result);
      token = result.token;
      if (!token || !result.results || result.results.length === 0) break;
    }
    return pages;
  });
  await step("queryNoMatch", () => client.state.query(STORE, { filter: { EQ: { run: `${RUN}-nobody` } } }));
  await step("queryFilterNested", () =>
    client.state.query(STORE, { filter: { AND: [{ EQ: { run: RUN } }, { EQ: { "person.org": "org-9" } }] } }),
  );

  await client.stop();
}

async function wrongToken() {
  // The SDK probes GET /v1.0/metadata 60 times, every daprSidecarPollingDelayMs (500 ms by default,
  // ~30 s in all). The delay is a public static of the SDK's Settings: lower it to keep this bounded.
  Settings.daprSidecarPollingDelayMs = 10;
  const client = newClient();
  await step("start", () => client.start());
  await step("isHealthy", () => client.health.isHealthy());
  await step("save", async () => describeResult(await client.state.save(STORE, [{ key: k("intruder"), value: 1 }])));
  await step("rawMetadata", async () => {
    const res = await fetch(`${BASE}/v1.0/metadata`, { headers: { "dapr-api-token": TOKEN } });
    return { status: res.status, body: await res.text() };
  });
  await step("rawGetNoToken", () => rawGet(k("intruder"), undefined));
  await step("rawHealthz", async () => {
    const res = await fetch(`${BASE}/v1.0/healthz`, { headers: { "dapr-api-token": TOKEN } });
    return { status: res.status };
  });
  await client.stop();
}

(MODE === "wrong-token" ? wrongToken() : full())
  .then(() => {
    process.stdout.write(JSON.stringify(report) + "\n");
    process.exit(0);
  })
  .catch((e) => {
    console.error("scenario crashed:", e);
    process.stdout.write(JSON.stringify({ ...report, crashed: String(e && e.stack ? e.stack : e) }) + "\n");
    process.exit(2);
  });
