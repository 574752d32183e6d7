"""How to reach registries, as the command line says: kept apart from the HTTP stack so that
commands which may not need the network do not load it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AccessOptions:
    """How to reach registries, from the command line: ``--tls-verify``, ``--creds``, ``--authfile``."""

    tls_verify: bool | None = None
    creds: str | None = None
    authfile: str | None = None
