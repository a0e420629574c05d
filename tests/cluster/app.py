"""The app container of the cluster tier: runs in the statecar image, talks to its sidecar.

Serves on :8000 (reachable from the host at the pod IP):
  GET /run?store=NAME  save, read, ETag (match + mismatch), transaction through localhost:3500
  GET /noauth          a request without the API token (expects 401 when a token is set)
  GET /stats           counters of the background loop that reads and writes every 50 ms
  GET /metadata        the sidecar's /v1.0/metadata
Stdlib only; the API token (if any) comes from DAPR_API_TOKEN.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BASE = f"http://127.0.0.1:{os.environ.get('DAPR_HTTP_PORT', '3500')}/v1.0"
TOKEN = os.environ.get("DAPR_API_TOKEN", "")
LOOP_STORE = os.environ.get("LOOP_STORE", "")


class Stats:
    """What the background loop saw (served as JSON on /stats)."""

    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0
        self.last_error = ""
        self.errors: list[str] = []

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failed": self.failed,
            "last_error": self.last_error,
            "errors": self.errors,
        }


STATS = Stats()


def call(
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    token: bool = True,
) -> tuple[int, dict[str, str], str]:
    data = None if body is None else json.dumps(body).encode()
    h = {"content-type": "application/json", **(headers or {})}
    if token and TOKEN:
        h["dapr-api-token"] = TOKEN
    req = urllib.request.Request(BASE + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def scenario(store: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    k = f"k-{time.time_ns()}"
    out["save"] = call("POST", f"/state/{store}", [{"key": k, "value": {"n": 1}}])[0]
    status, headers, body = call("GET", f"/state/{store}/{k}")
    out["get"] = status
    out["value"] = json.loads(body) if body else None
    etag = headers.get("ETag") or headers.get("etag")
    out["etag"] = etag
    out["save_match"] = call(
        "POST",
        f"/state/{store}",
        [{"key": k, "value": {"n": 2}, "etag": etag, "options": {"concurrency": "first-write"}}],
    )[0]
    out["save_stale"] = call(
        "POST",
        f"/state/{store}",
        [{"key": k, "value": {"n": 3}, "etag": etag, "options": {"concurrency": "first-write"}}],
    )[0]
    out["tx"] = call(
        "POST",
        f"/state/{store}/transaction",
        {
            "operations": [
                {"operation": "upsert", "request": {"key": k + "-a", "value": "A"}},
                {"operation": "delete", "request": {"key": k}},
            ]
        },
    )[0]
    out["after_tx_a"] = call("GET", f"/state/{store}/{k}-a")[2]
    out["after_tx_deleted"] = call("GET", f"/state/{store}/{k}")[0]
    return out


def loop() -> None:
    i = 0
    while True:
        i += 1
        try:
            s1 = call("POST", f"/state/{LOOP_STORE}", [{"key": "loop", "value": i}])[0]
            s2 = call("GET", f"/state/{LOOP_STORE}/loop")[0]
            if s1 == 204 and s2 == 200:
                STATS.ok += 1
            else:
                raise RuntimeError(f"status {s1} {s2}")
        except Exception as exc:  # noqa: BLE001
            STATS.failed += 1
            STATS.last_error = repr(exc)
            STATS.errors = [*STATS.errors, f"{time.time():.1f} {exc!r}"][-20:]
        time.sleep(0.05)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        args = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        result: dict[str, Any]
        if path == "/run":
            result = scenario(args.get("store", "statestore"))
        elif path == "/noauth":
            result = {"status": call("GET", "/metadata", token=False)[0]}
        elif path == "/stats":
            result = STATS.as_dict()
        elif path == "/metadata":
            status, _, body = call("GET", "/metadata")
            result = {"status": status, "body": json.loads(body) if body else None}
        else:
            self.send_response(404)
            self.end_headers()
            return
        data = json.dumps(result).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads /stats, not the access log."""


if __name__ == "__main__":
    if LOOP_STORE:
        threading.Thread(target=loop, daemon=True).start()
    ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
