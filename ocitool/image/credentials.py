"""Registry credentials, from the sources CONTRACT.md lists, first hit wins.

``--creds``, ``--authfile``, ``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``,
``~/.docker/config.json``. Each file may hold ``auths`` (base64 ``user:pass``),
``credHelpers`` (per registry) and ``credsStore`` (default helper), the helpers being
``docker-credential-<name>`` programs speaking Docker's credential-helper protocol.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path

from ocitool.errors import AuthError

TYPE_CHECKING = False  # type checkers treat this as True; this import serves annotations only
if TYPE_CHECKING:
    from typing import Any

DOCKER_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io")
DOCKER_HUB_SERVER_URL = "https://index.docker.io/v1/"


class Credentials:
    """A user name and password (or token) for one registry."""

    __slots__ = ("username", "password")

    def __init__(self, username: str, password: str):
        self.username = username
        self.password = password

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Credentials) and (self.username, self.password) == (other.username,
                                                                                     other.password)

    def __hash__(self) -> int:
        return hash((self.username, self.password))

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<hidden>)"


def parse_creds(text: str) -> Credentials:
    """Parse ``--creds USER:PASS``."""
    username, sep, password = text.partition(":")
    if not sep or not username:
        raise AuthError("--creds must be USER:PASSWORD")
    return Credentials(username, password)


def auth_files(authfile: str | None = None) -> list[Path]:
    """The auth files to look in, in order of precedence."""
    files = [Path(p) for p in (authfile, os.environ.get("REGISTRY_AUTH_FILE")) if p]
    if runtime_dir := os.environ.get("XDG_RUNTIME_DIR"):
        files.append(Path(runtime_dir) / "containers" / "auth.json")
    files.append(Path.home() / ".docker" / "config.json")
    return files


def find_credentials(registry: str, repository: str = "", creds: str | None = None,
                     authfile: str | None = None) -> Credentials | None:
    """Credentials for ``registry`` (and, for per-repository entries, ``repository``)."""
    if creds:
        return parse_creds(creds)
    if authfile and not Path(authfile).is_file():
        raise AuthError(f"auth file {authfile} does not exist")
    for path in auth_files(authfile):
        found = _from_file(path, registry, repository)
        if found:
            return found
    return None


def _from_file(path: Path, registry: str, repository: str) -> Credentials | None:
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AuthError(f"cannot read auth file {path}: {exc}") from None
    if not isinstance(document, dict):
        raise AuthError(f"auth file {path} is not a JSON object")
    helpers = document.get("credHelpers") or {}
    for key in _lookup_keys(registry, repository):
        if key in helpers:
            return _from_helper(helpers[key], registry)
    auths = {_normalize_key(k): v for k, v in (document.get("auths") or {}).items()}
    for key in _lookup_keys(registry, repository):
        if key in auths and (found := _decode_auth(auths[key], path)):
            return found
    if store := document.get("credsStore"):
        return _from_helper(store, registry)
    return None


def _lookup_keys(registry: str, repository: str) -> list[str]:
    """Most specific first: ``host/a/b``, ``host/a``, ``host`` (containers-auth.json rules)."""
    host = "docker.io" if registry in DOCKER_HUB_KEYS else registry
    parts = repository.split("/") if repository else []
    return [f"{host}/{'/'.join(parts[:n])}" for n in range(len(parts), 0, -1)] + [host]


def _normalize_key(key: str) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``http://host:5000/`` -> ``host:5000``."""
    key = key.split("://", 1)[-1].rstrip("/")
    for suffix in ("/v1", "/v2"):
        key = key.removesuffix(suffix)
    host, _, path = key.partition("/")
    host = "docker.io" if host in DOCKER_HUB_KEYS else host
    return f"{host}/{path}" if path else host


def _decode_auth(entry: Any, path: Path) -> Credentials | None:
    if not isinstance(entry, dict) or not entry.get("auth"):
        return None
    try:
        username, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise AuthError(f"auth file {path} has a malformed 'auth' entry") from None
    if not sep:
        raise AuthError(f"auth file {path} has an 'auth' entry without a password")
    return Credentials(username, password)


def _from_helper(name: str, registry: str) -> Credentials | None:
    """Ask ``docker-credential-<name> get``; a helper with no entry means no credentials."""
    import subprocess  # only credential helpers need it
    program = f"docker-credential-{name}"
    server = DOCKER_HUB_SERVER_URL if registry in DOCKER_HUB_KEYS else registry
    try:
        result = subprocess.run([program, "get"], input=server, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise AuthError(f"credential helper {program} is configured but not installed") from None
    except subprocess.TimeoutExpired:
        raise AuthError(f"credential helper {program} did not answer within 30 s") from None
    if result.returncode != 0:
        if "credentials not found" in (result.stdout + result.stderr).lower():
            return None
        raise AuthError(f"credential helper {program} failed: {(result.stderr or result.stdout).strip()}")
    try:
        answer = json.loads(result.stdout)
        return Credentials(answer["Username"], answer["Secret"])
    except (ValueError, KeyError, TypeError):
        raise AuthError(f"credential helper {program} printed something that is not credentials") from None
