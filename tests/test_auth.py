"""Authentication against real registries: distribution's token flow and htpasswd Basic auth."""

from __future__ import annotations

import base64
import json
import os
import stat

from support.faultproxy import FaultProxy
from support.layout import assert_valid_layout


def _auth_entry(user: str, password: str) -> dict:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def _write_json(path, document) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return str(path)


def test_anonymous_bearer_token_for_public_repository(ocitool, token_registry):
    result = ocitool("pull", f"{token_registry.host}/public/busybox")
    assert result.stdout.strip() == token_registry.images["public/busybox:latest"].digest


def test_private_repository_needs_credentials(ocitool, token_registry):
    result = ocitool("pull", f"{token_registry.host}/private/busybox", check=False)
    assert result.returncode != 0
    assert "access denied" in result.stderr and "--creds" in result.stderr
    assert assert_valid_layout(ocitool.root / "images") == {}


def test_bearer_with_creds_and_token_reused_per_scope(ocitool, token_registry):
    tokens = token_registry.token_server
    before = len(tokens.issued)
    ocitool("pull", "--creds", "alice:wonderland", f"{token_registry.host}/private/busybox")
    issued = tokens.issued[before:]
    # One token for the repository's pull scope serves the manifest, config and layer requests.
    assert issued == [("alice", "repository:private/busybox:pull")]


def test_wrong_password_is_a_clear_error(ocitool, token_registry):
    result = ocitool("pull", "--creds", "alice:nope", f"{token_registry.host}/private/busybox", check=False)
    assert result.returncode != 0
    assert "refused user 'alice'" in result.stderr


def test_basic_auth(ocitool, basic_registry):
    ref = f"{basic_registry.host}/library/busybox"
    denied = ocitool("pull", ref, check=False)
    assert denied.returncode != 0 and "requires credentials" in denied.stderr
    wrong = ocitool("pull", "--creds", "bob:wrong", ref, check=False)
    assert wrong.returncode != 0 and "access denied" in wrong.stderr
    ok = ocitool("pull", "--creds", "bob:builder", ref)
    assert ok.stdout.strip() == basic_registry.images["library/busybox:latest"].digest


def test_authfile_flag_and_env_and_precedence(ocitool, basic_registry, tmp_path):
    ref = f"{basic_registry.host}/library/busybox"
    good = _write_json(tmp_path / "good.json", {"auths": {basic_registry.host: _auth_entry("bob", "builder")}})
    bad = _write_json(tmp_path / "bad.json", {"auths": {basic_registry.host: _auth_entry("bob", "wrong")}})
    ocitool("pull", "--authfile", good, ref)
    ocitool("pull", ref, env={"REGISTRY_AUTH_FILE": good})
    # --authfile beats $REGISTRY_AUTH_FILE, and --creds beats both.
    assert ocitool("pull", "--authfile", bad, ref, env={"REGISTRY_AUTH_FILE": good}, check=False).returncode != 0
    ocitool("pull", "--creds", "bob:builder", "--authfile", bad, ref)
    missing = ocitool("pull", "--authfile", str(tmp_path / "none.json"), ref, check=False)
    assert "does not exist" in missing.stderr


def test_xdg_runtime_auth_json_before_docker_config(ocitool, basic_registry, tmp_path):
    ref = f"{basic_registry.host}/library/busybox"
    runtime = tmp_path / "run"
    _write_json(runtime / "containers" / "auth.json",
                {"auths": {f"http://{basic_registry.host}/v2/": _auth_entry("bob", "builder")}})
    _write_json(ocitool.home / ".docker" / "config.json",
                {"auths": {basic_registry.host: _auth_entry("bob", "wrong")}})
    ocitool("pull", ref, env={"XDG_RUNTIME_DIR": str(runtime)})
    assert ocitool("pull", ref, check=False).returncode != 0  # only the wrong docker config left


def test_per_repository_auth_entry(ocitool, token_registry, tmp_path):
    authfile = _write_json(tmp_path / "auth.json", {"auths": {
        f"{token_registry.host}/private": _auth_entry("alice", "wonderland"),
        token_registry.host: _auth_entry("alice", "wrong")}})
    ocitool("pull", "--authfile", authfile, f"{token_registry.host}/private/busybox")


def _helper(bin_dir, name: str, host: str, user: str, password: str) -> None:
    """A docker-credential-<name> program speaking the credential-helper protocol."""
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(f"""#!/bin/sh
[ "$1" = get ] || exit 1
read server
if [ "$server" = "{host}" ]; then
  printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{password}"}}' "$server"
else
  echo "credentials not found in native keychain"; exit 1
fi
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_cred_helpers_and_creds_store(ocitool, basic_registry, tmp_path):
    ref = f"{basic_registry.host}/library/busybox"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _helper(bin_dir, "per-registry", basic_registry.host, "bob", "builder")
    _helper(bin_dir, "store", basic_registry.host, "bob", "builder")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    config = ocitool.home / ".docker" / "config.json"
    _write_json(config, {"credHelpers": {basic_registry.host: "per-registry"}})
    ocitool("pull", ref, env=env)
    _write_json(config, {"credsStore": "store"})
    ocitool("pull", ref, env=env)
    _write_json(config, {"credsStore": "not-installed"})
    result = ocitool("pull", ref, env=env, check=False)
    assert "docker-credential-not-installed" in result.stderr


def test_redirected_blob_download_drops_authorization(ocitool, basic_registry, registry):
    """Blob redirects (e.g. to object storage) must not carry the registry credentials along."""
    with FaultProxy(basic_registry.url) as front, FaultProxy(registry.url) as storage:
        front.redirect_blobs_to = f"http://localhost:{storage.host.split(':')[1]}"
        ocitool("pull", "--creds", "bob:builder", f"{front.host}/library/busybox")
        front_auth = [h.get("Authorization") for m, p, h in front.requests_seen if "/manifests/" in p]
        storage_auth = [h.get("Authorization") for m, p, h in storage.requests_seen]
    assert front_auth and all(a and a.startswith("Basic ") for a in front_auth)
    assert storage_auth and not any(storage_auth)


def test_token_cache_reuses_until_expiry(token_registry, monkeypatch):
    from ocitool.image import auth
    from ocitool.image.credentials import Credentials
    from ocitool.image.httpclient import Client

    tokens = token_registry.token_server
    challenge = auth.Challenge("bearer", {"realm": tokens.realm, "service": tokens.service})
    cache = auth.TokenCache(Client(), Credentials("alice", "wonderland"))
    before = len(tokens.issued)
    first = cache.header(challenge, "repository:private/busybox:pull")
    assert cache.header(challenge, "repository:private/busybox:pull") == first
    assert len(tokens.issued) == before + 1
    cache.header(challenge, "repository:public/busybox:pull")  # another scope, another token
    assert len(tokens.issued) == before + 2
    now = auth.time.monotonic()
    monkeypatch.setattr(auth.time, "monotonic", lambda: now + tokens.expires_in)
    cache.header(challenge, "repository:private/busybox:pull")
    assert len(tokens.issued) == before + 3
