"""How and when to reach registries, as the command line says: kept apart from the HTTP stack
so that commands which may not need the network do not load it."""

from __future__ import annotations

#: ``--pull``: when an image is pulled before it is used (missing: only when not in the store).
PULL_POLICIES = ("missing", "always", "never")


class AccessOptions:
    """How to reach registries, from the command line: ``--tls-verify``, ``--creds``, ``--authfile``."""

    __slots__ = ("tls_verify", "creds", "authfile")

    def __init__(self, tls_verify: bool | None = None, creds: str | None = None, authfile: str | None = None):
        self.tls_verify = tls_verify
        self.creds = creds
        self.authfile = authfile
