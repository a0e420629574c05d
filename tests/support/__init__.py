"""
Helpers every test tier shares (none of these modules is a test module):

- `ports`: `free_port()`, a free TCP port on 127.0.0.1.
- `processes`: `stop(process)`, the one stop sequence (signal by pid, bounded waits, SIGKILL).
- `require`: `require(binary)` and `unavailable(reason)`: a missing tool or server skips the test
  with the reason, or fails it when `STATECAR_REQUIRE_SERVERS` (or `CI`) is set, as `make test` does.
- `redis_server`: throwaway `redis-server` processes (plain, replica, Sentinel, TLS).
- `pg_server`: a throwaway PostgreSQL server (`initdb` + `postgres`).
- `sidecar`: a real `statecar sidecar` process on free loopback ports.
"""
