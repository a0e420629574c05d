"""
Talking to the API server: the client (`kube`, the only importer of kubernetes_asyncio), the
Lease election (`leader`), Events posted in the background (`events`), and the API's time
format (`timestamps`). kopf's own watching is kopf's.
"""
