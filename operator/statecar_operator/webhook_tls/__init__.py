"""
The admission webhook's TLS: certificates (`issuing`, pure), the operator-managed Secret and
its CA rotation plan (`rotation`, pure), the webhook configurations' caBundle (`ca_bundle`,
pure), the condition a replica reports (`condition`, pure), where the certificate comes from
at run time (`sources`: the managed Secret or files), and the HTTPS server that serves it
without closing its port on renewal (`server`, kopf's webhook server).
"""
