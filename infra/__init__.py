"""Edgeplane's AWS deployment as code: a CDK app (``infra.app``) wrapping the Chalice app
with everything it needs, synthesized and checked offline by ``make infra``."""
