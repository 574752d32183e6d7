"""Self-tests for the test infrastructure: if these fail, ocitool's tests mean nothing."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from support import images
from support.faultproxy import FaultProxy
from support.push import push_image
from support.registry import RegistryServer

ACCEPT = ", ".join([images.OCI_MANIFEST, images.OCI_INDEX, images.DOCKER_MANIFEST])
ALICE = ("alice", "wonderland")


def _manifest(url: str, repo: str, ref: str, headers: dict[str, str] | None = None,
              auth: tuple[str, str] | None = None) -> requests.Response:
    """GET a manifest, accepting every media type the test images use."""
    return requests.get(f"{url}/v2/{repo}/manifests/{ref}", timeout=10, auth=auth,
                        headers={"Accept": ACCEPT, **(headers or {})})


def _token(registry: RegistryServer, scope: str, auth: tuple[str, str] | None) -> requests.Response:
    """Ask the registry's token server for a token by hand."""
    tokens = registry.token_server
    assert tokens is not None
    return requests.get(tokens.realm, params={"service": tokens.service, "scope": scope},
                        auth=auth, timeout=10)


def _bearer(registry: RegistryServer, scope: str, auth: tuple[str, str] | None) -> dict[str, str]:
    """An Authorization header carrying a fresh token for ``scope``."""
    return {"Authorization": f"Bearer {_token(registry, scope, auth).json()['token']}"}


def _raw_get(url: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    """GET with http.client, which reports short bodies as IncompleteRead."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", parts.path, headers=headers or {})
    return conn.getresponse()


@pytest.mark.parametrize("ref", ["library/busybox:latest", "library/busybox:1.36",
                                 "test/whiteouts:latest", "test/zstd:latest",
                                 "test/multi:latest", "test/docker-busybox:latest"])
def test_registry_serves_seeded_manifests(registry: RegistryServer, ref: str) -> None:
    image = registry.images[ref]
    repo, tag = ref.rsplit(":", 1)
    response = _manifest(registry.url, repo, tag)
    assert response.status_code == 200
    assert response.headers["Docker-Content-Digest"] == image.digest
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == image.digest


def test_registry_binds_loopback_free_port(registry: RegistryServer) -> None:
    assert registry.host == f"127.0.0.1:{registry.port}" and registry.port != 5000
    assert registry.url == f"http://{registry.host}"


def test_docker_image_uses_schema2_media_types(registry: RegistryServer) -> None:
    response = _manifest(registry.url, "test/docker-busybox", "latest")
    assert response.headers["Content-Type"] == images.DOCKER_MANIFEST
    assert response.json()["layers"][0]["mediaType"] == images.DOCKER_LAYER + ".gzip"


def test_index_children_are_pullable_by_digest(registry: RegistryServer) -> None:
    index = registry.images["test/multi:latest"]
    platforms = [p["architecture"] for _, p in index.manifests]
    assert platforms == ["amd64", "arm64"]
    for child, _ in index.manifests:
        assert _manifest(registry.url, "test/multi", child.digest).status_code == 200


def test_token_registry_requires_a_token(token_registry: RegistryServer) -> None:
    assert _manifest(token_registry.url, "private/busybox", "latest").status_code == 401
    challenge = requests.get(f"{token_registry.url}/v2/", timeout=10).headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer realm=")
    headers = _bearer(token_registry, "repository:private/busybox:pull", ALICE)
    response = _manifest(token_registry.url, "private/busybox", "latest", headers=headers)
    assert response.status_code == 200
    assert response.headers["Docker-Content-Digest"] == \
        token_registry.images["private/busybox:latest"].digest


def test_token_server_policy(token_registry: RegistryServer) -> None:
    anonymous_public = _bearer(token_registry, "repository:public/busybox:pull", None)
    assert _manifest(token_registry.url, "public/busybox", "latest",
                     headers=anonymous_public).status_code == 200
    anonymous_private = _bearer(token_registry, "repository:private/busybox:pull", None)
    assert _manifest(token_registry.url, "private/busybox", "latest",
                     headers=anonymous_private).status_code == 401
    assert _token(token_registry, "repository:private/busybox:pull",
                  ("alice", "wrong")).status_code == 401


def test_token_server_response_and_bookkeeping(token_registry: RegistryServer) -> None:
    tokens = token_registry.token_server
    assert tokens is not None
    before = len(tokens.issued)
    body = _token(token_registry, "repository:private/busybox:pull,push", ALICE).json()
    assert body["token"] == body["access_token"] and body["expires_in"] == tokens.expires_in
    assert body["issued_at"].endswith("Z")
    assert tokens.issued[before:] == [("alice", "repository:private/busybox:pull,push")]


def test_basic_registry(basic_registry: RegistryServer) -> None:
    assert _manifest(basic_registry.url, "library/busybox", "latest").status_code == 401
    assert _manifest(basic_registry.url, "library/busybox", "latest",
                     auth=("bob", "wrong")).status_code == 401
    response = _manifest(basic_registry.url, "library/busybox", "latest", auth=("bob", "builder"))
    assert response.headers["Docker-Content-Digest"] == \
        basic_registry.images["library/busybox:latest"].digest


@pytest.fixture
def proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    """A fault proxy in front of the open registry."""
    with FaultProxy(registry.url) as fault_proxy:
        yield fault_proxy


def _busybox_layer(registry: RegistryServer) -> tuple[str, images.Blob]:
    """The busybox layer blob and its registry path (to append to a registry or proxy URL)."""
    layer = registry.images["library/busybox:latest"].layers[0]
    return f"/v2/library/busybox/blobs/{layer.digest}", layer


def test_proxy_forwards_and_records(proxy: FaultProxy, registry: RegistryServer) -> None:
    response = _manifest(proxy.url, "library/busybox", "latest")
    assert response.headers["Docker-Content-Digest"] == registry.images["library/busybox:latest"].digest
    method, path, headers = proxy.requests_seen[-1]
    assert (method, path) == ("GET", "/v2/library/busybox/manifests/latest")
    assert headers["accept"] == ACCEPT


def test_proxy_cut_then_resume_with_range(proxy: FaultProxy, registry: RegistryServer) -> None:
    path, layer = _busybox_layer(registry)
    proxy.cut_blob_after = 1000
    cut = _raw_get(proxy.url + path)
    assert int(cut.getheader("Content-Length")) == layer.size
    with pytest.raises(http.client.IncompleteRead) as short:
        cut.read()
    assert short.value.partial == layer.data[:1000]
    assert proxy.cut_blob_after is None
    rest = requests.get(proxy.url + path, headers={"Range": "bytes=1000-"}, timeout=10)
    assert rest.status_code == 206 and short.value.partial + rest.content == layer.data
    assert proxy.requests_seen[-1][2]["Range"] == "bytes=1000-"


def test_proxy_flips_a_blob_byte(proxy: FaultProxy, registry: RegistryServer) -> None:
    path, layer = _busybox_layer(registry)
    proxy.flip_blob_bytes = True
    body = requests.get(proxy.url + path, timeout=10).content
    assert len(body) == layer.size
    assert sum(a != b for a, b in zip(body, layer.data)) == 1


def test_proxy_status_queue(proxy: FaultProxy) -> None:
    proxy.status_queue = [(429, {"Retry-After": "1"}), (503, {})]
    assert requests.get(f"{proxy.url}/v2/", timeout=10).status_code == 200
    first = _manifest(proxy.url, "library/busybox", "latest")
    assert (first.status_code, first.headers["Retry-After"]) == (429, "1")
    assert _manifest(proxy.url, "library/busybox", "latest").status_code == 503
    assert _manifest(proxy.url, "library/busybox", "latest").status_code == 200


def test_proxy_always_status(proxy: FaultProxy) -> None:
    proxy.always_status = 500
    assert requests.get(f"{proxy.url}/v2/", timeout=10).status_code == 500
    assert _manifest(proxy.url, "library/busybox", "latest").status_code == 500


def test_push_through_proxy_rewrites_upload_location(proxy: FaultProxy) -> None:
    image = images.make_image([images.tar_layer([images.File("hello", b"through the proxy\n")])])
    assert push_image(proxy.url, "test/via-proxy", "latest", image) == image.digest
    assert any(m == "PUT" and "/blobs/uploads/" in p for m, p, _ in proxy.requests_seen)


def test_images_are_reproducible() -> None:
    layer = images.tar_layer([images.Dir("d"), images.File("d/f", b"x"), images.Symlink("l", "d/f")])
    assert images.tar_layer([images.Dir("d"), images.File("d/f", b"x"),
                             images.Symlink("l", "d/f")]) == layer
    assert images.make_image([layer]).digest == images.make_image([layer]).digest


def test_whiteout_image_layers() -> None:
    names = [tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob.data))).getnames()
             for blob in images.whiteout_image().layers]
    assert "a/.wh.file1" in names[1] and ".wh.replace-me" in names[1]
    assert "opq/.wh..wh..opq" in names[2]


def test_zstd_image_uses_zstd() -> None:
    layer = images.zstd_image().layers[0]
    assert layer.media_type == images.OCI_LAYER + "+zstd"
    assert layer.data[:4] == b"\x28\xb5\x2f\xfd"


def test_ocitool_runner_isolation(ocitool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCITOOL_ROOT", "/nonexistent")
    env = ocitool.environment({"EXTRA": "1"})
    assert env["HOME"] == str(tmp_path / "home") and "OCITOOL_ROOT" not in env and env["EXTRA"] == "1"
    assert ocitool.root == tmp_path / "root"
    config = ocitool.write_config("[registries]\n")
    assert config.read_text() == "[registries]\n"
    with pytest.raises(AssertionError, match="stderr"):
        ocitool("--no-such-option-for-sure")
