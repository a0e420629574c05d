"""
The reconciler and what it decides from: the Lease holder's level-triggered loop
(`reconciler`), the parsed components kopf's indexes hold (`component_index`), each
component's status conditions (`conditions`), the backend reachability probes
(`reachability`), and the per-namespace wiring Secret (`wiring_secret`).
"""
