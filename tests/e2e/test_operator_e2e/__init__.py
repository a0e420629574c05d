"""
The operator and the injector, proven against a real kube-apiserver (issue 3, "Proven against a
real API server", items 1-6).

Everything runs for real except the kubelet: etcd + kube-apiserver (the session's `cluster`),
`statecar operator` as a process authenticated with a ServiceAccount token that is bound to
nothing but what `statecar operator rbac` prints, the webhook configurations that `statecar
operator webhook-config` prints (the API server calls the operator over TLS, verifying it with
the `caBundle`), real `redis-server`s, and the sidecar started from the container spec that the
webhook injected into a stored Pod (`kubelet.PodProcess`, with the wiring Secret volume kept in
sync the way the kubelet does).

Beyond items 1-6: the sidecar's probes follow its store, an edit the sidecar cannot open keeps
the previous store serving, the API token reaches the sidecar by reference only, and a second
replica admits while following and takes over when the leader is killed (last: it kills it).

The modules of this package run in name order (test_1 ... test_7, the sections of the former
`test_operator_e2e.py`) and share the package's fixtures (`conftest.py`: one operator, one
Redis, the `orders` component of namespace `e2e-shop`); each test names what it proves. A failed
test's report carries the tails of the operator's and the sidecar's logs.
"""
