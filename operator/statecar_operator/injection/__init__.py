"""
The sidecar injector's decisions, pure (no kopf, no Kubernetes client): whether and how a pod
gets the statecar sidecar (`plan`, reading `annotations`), what the injected pod looks like
(`patching`), the default app id (`workloads`), resource quantities (`quantities`), and the same
injection applied offline to manifests (`offline`, behind `statecar inject`).
"""
