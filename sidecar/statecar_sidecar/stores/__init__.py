"""
State store backends behind one small async interface (`base.StateStore`).

One module per backend, named after the Dapr component type's suffix; `registry` imports a
backend only when a component asks for it. Nothing here knows about HTTP.
"""
