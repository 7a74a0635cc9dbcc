"""Who may call the API, and what they did: principals and their roles, the one table of
the role every route needs, and the audit of every write.

- ``roles``: viewer < operator < admin.
- ``tokens`` and ``principals``: named bearer tokens, stored as salted hashes.
- ``identity``: who is calling, from a token or from API Gateway's authorizer (the seam).
- ``rules``: route -> role (and what a write route records), the table every route is in.
- ``trail`` and ``changes``: the audit records, and what each write route changed.
- ``guard``: the middlewares that put every request through all of the above.
- ``incoming``: a request as those see it.
"""
