"""
Objects the operator's deployment needs, as data: the RBAC it is bound to (`rbac`), the webhook
configurations pointing at it (`webhooks`), and the labels it puts on what it creates
(`labels`). The chart renders the same objects; tests keep them equal.
"""
