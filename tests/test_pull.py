"""``ocitool pull`` and the store commands against a real registry (Debian's docker-registry)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support import images
from support.faultproxy import FaultProxy
from support.layout import assert_valid_layout, blob_digests, blob_path
from support.push import push_image
from support.registry import free_port

BUSYBOX = "docker.io/library/busybox:latest"


@pytest.fixture
def mirrored(ocitool, registry):
    """An ocitool whose config makes the test registry the docker.io mirror."""
    ocitool.write_config(f'[registries."docker.io"]\nmirrors = ["{registry.host}"]\n')
    return ocitool


def layout(ocitool):
    return ocitool.root / "images"


def test_pull_short_name_through_mirror(mirrored, registry):
    result = mirrored("pull", "busybox")
    expected = registry.images["library/busybox:latest"].digest
    assert result.stdout.strip() == expected
    refs = assert_valid_layout(layout(mirrored))
    assert refs[BUSYBOX]["digest"] == expected
    assert refs[BUSYBOX]["platform"] == {"architecture": "amd64", "os": "linux"}
    assert "Pulled docker.io/library/busybox:latest" in result.stderr


def test_layers_are_shared_and_not_downloaded_twice(ocitool, registry):
    with FaultProxy(registry.url) as proxy:
        ocitool("pull", f"{proxy.host}/library/busybox:latest")
        first = len([r for r in proxy.requests_seen if "/blobs/" in r[1]])
        second = ocitool("pull", f"{proxy.host}/library/busybox:1.36")
        blob_gets = [r for r in proxy.requests_seen if "/blobs/" in r[1]][first:]
    assert first == 2  # config and the one layer
    assert len(blob_gets) == 1  # only the config is fetched again: the layer is present
    assert "already present" in second.stderr
    refs = assert_valid_layout(layout(ocitool))
    assert {f"{proxy.host}/library/busybox:latest", f"{proxy.host}/library/busybox:1.36"} <= set(refs)


def test_quiet_prints_only_the_digest(ocitool, registry):
    result = ocitool("pull", "-q", f"docker://{registry.host}/test/whiteouts")
    assert result.stdout.strip() == registry.images["test/whiteouts:latest"].digest
    assert result.stderr == ""


def test_pull_by_digest(ocitool, registry):
    digest = registry.images["library/busybox:latest"].digest
    ocitool("pull", f"{registry.host}/library/busybox@{digest}")
    refs = assert_valid_layout(layout(ocitool))
    assert refs[f"{registry.host}/library/busybox@{digest}"]["digest"] == digest


def test_multi_platform_default_is_host_and_flag_overrides(ocitool, registry):
    index = registry.images["test/multi:latest"]
    by_arch = {platform["architecture"]: image.digest for image, platform in index.manifests}
    assert ocitool("pull", "-q", f"{registry.host}/test/multi").stdout.strip() == by_arch["amd64"]
    arm = ocitool("pull", "-q", "--platform", "linux/arm64", f"{registry.host}/test/multi:latest")
    assert arm.stdout.strip() == by_arch["arm64"]
    refs = assert_valid_layout(layout(ocitool))
    assert refs[f"{registry.host}/test/multi:latest"]["platform"]["architecture"] == "arm64"


def test_unknown_platform_lists_what_the_image_has(ocitool, registry):
    result = ocitool("pull", "--platform", "linux/s390x", f"{registry.host}/test/multi", check=False)
    assert result.returncode != 0
    assert result.stderr.startswith("ocitool: error:")
    assert "linux/amd64, linux/arm64" in result.stderr


def test_zstd_layer_is_stored_as_is(ocitool, registry):
    ocitool("pull", f"{registry.host}/test/zstd")
    manifest = json.loads(ocitool("inspect", "--raw", f"{registry.host}/test/zstd").stdout)
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"


def test_docker_schema2_is_converted_to_oci(ocitool, registry):
    ref = f"{registry.host}/test/docker-busybox"
    result = ocitool("pull", ref)
    assert "Converted Docker manifest" in result.stderr
    refs = assert_valid_layout(layout(ocitool))
    descriptor = refs[f"{ref}:latest"]
    assert descriptor["digest"] == result.stdout.strip() != registry.images["test/docker-busybox:latest"].digest
    manifest = json.loads(blob_path(layout(ocitool), descriptor["digest"]).read_text())
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"


def test_images_table_and_json(ocitool, registry):
    ocitool("pull", f"{registry.host}/library/busybox")
    table = ocitool("images").stdout.splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "DIGEST", "PLATFORM", "CREATED", "SIZE"]
    assert table[1].split()[:4] == [f"{registry.host}/library/busybox", "latest",
                                    registry.images["library/busybox:latest"].digest[7:19], "linux/amd64"]
    rows = json.loads(ocitool("images", "--format", "json").stdout)
    assert rows[0]["name"] == f"{registry.host}/library/busybox:latest"
    image = registry.images["library/busybox:latest"]
    assert rows[0]["size"] == image.manifest.size + sum(b.size for b in [image.config, *image.layers])


def test_inspect_local(ocitool, registry):
    image = registry.images["library/busybox:latest"]
    ref = f"{registry.host}/library/busybox"
    ocitool("pull", ref)
    summary = json.loads(ocitool("inspect", ref).stdout)
    assert summary["Digest"] == image.digest
    assert summary["Layers"] == [layer.digest for layer in image.layers]
    assert summary["Architecture"] == "amd64"
    assert ocitool("inspect", "--raw", ref).stdout.strip().encode() == image.manifest.data.strip()
    assert json.loads(ocitool("inspect", "--config", ref).stdout) == json.loads(image.config.data)


def test_inspect_remote_does_not_pull(ocitool, registry):
    ref = f"docker://{registry.host}/library/busybox:latest"
    summary = json.loads(ocitool("inspect", ref).stdout)
    assert summary["Digest"] == registry.images["library/busybox:latest"].digest
    assert sorted(summary["RepoTags"]) == ["1.36", "latest"]
    raw = json.loads(ocitool("inspect", "--raw", f"docker://{registry.host}/test/multi").stdout)
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
    config = json.loads(ocitool("inspect", "--config", ref).stdout)
    assert config["architecture"] == "amd64"
    assert not (ocitool.root / "images" / "index.json").exists() or \
        json.loads((ocitool.root / "images" / "index.json").read_text())["manifests"] == []


def test_inspect_missing_local_image(ocitool):
    result = ocitool("inspect", "nothing-here", check=False)
    assert result.returncode != 0
    assert "not in the store" in result.stderr


def test_tags(ocitool, registry):
    tags = json.loads(ocitool("tags", f"docker://{registry.host}/library/busybox").stdout)
    assert tags["Repository"] == f"{registry.host}/library/busybox"
    assert sorted(tags["Tags"]) == ["1.36", "latest"]
    assert ocitool("tags", f"docker://{registry.host}/library/busybox:latest", check=False).returncode == 2


def test_rmi_keeps_shared_blobs_and_gc_removes_strays(ocitool, registry):
    ocitool("pull", f"{registry.host}/library/busybox:latest")
    ocitool("pull", f"{registry.host}/library/busybox:1.36")
    ocitool("pull", f"{registry.host}/test/whiteouts")
    before = blob_digests(layout(ocitool))
    ocitool("rmi", f"{registry.host}/library/busybox:latest")
    refs = assert_valid_layout(layout(ocitool))
    assert f"{registry.host}/library/busybox:latest" not in refs
    assert blob_digests(layout(ocitool)) == before  # 1.36 still uses them
    ocitool("rmi", f"{registry.host}/test/whiteouts")
    whiteouts = registry.images["test/whiteouts:latest"]
    assert not {b.digest for b in whiteouts.blobs} & blob_digests(layout(ocitool))
    stray = blob_path(layout(ocitool), images.Blob("x", b"stray").digest)
    stray.write_bytes(b"stray")
    (layout(ocitool) / ".ocitool" / "tmp" / "blob-leftover").write_bytes(b"partial")
    assert "Deleted 1 blobs" in ocitool("gc").stdout
    assert not stray.exists() and not list((layout(ocitool) / ".ocitool" / "tmp").iterdir())
    assert f"{registry.host}/library/busybox:1.36" in assert_valid_layout(layout(ocitool))
    assert ocitool("rmi", "never-pulled", check=False).returncode != 0


# -- bad input: each gets a clear one-line error and leaves no trace in the store -----------

def assert_clean_failure(result, ocitool, *phrases):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ocitool: error: "), result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    store = layout(ocitool)
    if store.exists():
        assert assert_valid_layout(store) == {}
        assert blob_digests(store) == set()
        assert not list((store / ".ocitool" / "tmp").iterdir())


def test_unknown_repository(ocitool, registry):
    result = ocitool("pull", f"{registry.host}/no/such-repo", check=False)
    assert_clean_failure(result, ocitool, "not found")


def test_unknown_tag(ocitool, registry):
    result = ocitool("pull", f"{registry.host}/library/busybox:nope", check=False)
    assert_clean_failure(result, ocitool, "busybox:nope", "not found")


def test_invalid_reference(ocitool):
    assert_clean_failure(ocitool("pull", "Busybox", check=False), ocitool, "must be lowercase")


@pytest.mark.parametrize("body, content_type, phrase", [
    (b"<html>not json</html>", "application/vnd.oci.image.manifest.v1+json", "not valid JSON"),
    (json.dumps({"schemaVersion": 1, "name": "x", "tag": "latest", "fsLayers": []}).encode(),
     "application/vnd.docker.distribution.manifest.v1+prettyjws", "schema1"),
    (b'{"schemaVersion": 2}', "application/vnd.example.weird+json", "unsupported manifest media type"),
    (b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": []}',
     "application/vnd.oci.image.manifest.v1+json", "'config'"),
])
def test_lying_manifest(ocitool, registry, body, content_type, phrase):
    with FaultProxy(registry.url) as proxy:
        proxy.manifest_reply = (body, content_type)
        result = ocitool("pull", f"{proxy.host}/library/busybox", check=False)
    assert_clean_failure(result, ocitool, phrase)


def test_unsupported_layer_media_type(ocitool, registry):
    artifact = images.make_image([images.tar_layer([images.File("x", b"x")])])
    layer = images.Blob("application/vnd.example.model.weights", artifact.layers[0].data)
    weird = images.Image(artifact.config, [layer], images.Blob(images.OCI_MANIFEST, json.dumps({
        "schemaVersion": 2, "mediaType": images.OCI_MANIFEST, "config": artifact.config.descriptor(),
        "layers": [layer.descriptor()]}).encode()))
    push_image(registry.url, "test/artifact", "latest", weird)
    result = ocitool("pull", f"{registry.host}/test/artifact", check=False)
    assert_clean_failure(result, ocitool, "unsupported layer media type")


def test_manifest_digest_mismatch_by_digest(ocitool, registry):
    wrong = registry.images["test/whiteouts:latest"].digest
    with FaultProxy(registry.url) as proxy:
        proxy.manifest_reply = (registry.images["library/busybox:latest"].manifest.data, images.OCI_MANIFEST)
        result = ocitool("pull", f"{proxy.host}/library/busybox@{wrong}", check=False)
    assert_clean_failure(result, ocitool, "does not match")


def test_mirrors_in_order_then_registry_itself(ocitool, registry):
    dead = f"127.0.0.1:{free_port()}"
    with FaultProxy(registry.url) as empty_mirror:
        empty_mirror.always_status = 404
        ocitool.write_config(f'[registries."{registry.host}"]\nmirrors = ["{dead}", "{empty_mirror.host}"]\n')
        result = ocitool("--log-level", "info", "pull", f"{registry.host}/library/busybox")
        assert empty_mirror.requests_seen, "the second mirror was not tried"
    assert result.stdout.strip() == registry.images["library/busybox:latest"].digest
    assert f"mirror {dead} failed" in result.stderr


def test_config_file_errors_are_one_line(ocitool):
    ocitool.write_config('[registries."docker.io"]\nmirrors = "not-a-list"\n')
    result = ocitool("pull", "busybox", check=False)
    assert result.returncode != 0 and "mirrors must be a list" in result.stderr


def test_tls_verify_true_refuses_plain_http_registry(ocitool, registry):
    result = ocitool("pull", "--tls-verify=true", f"{registry.host}/library/busybox", check=False)
    assert_clean_failure(result, ocitool, "TLS")


def test_python_dash_m_and_help():
    out = subprocess.run([sys.executable, "-m", "ocitool", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "pull" in out.stdout


COMMANDS = ["pull", "images", "inspect", "tags", "unpack", "spec", "run", "ps", "rm", "prune", "rmi", "gc"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    top = subprocess.run([sys.executable, "-m", "ocitool", "--help"], capture_output=True, text=True).stdout
    assert f"\n  {command} " in top                       # listed, with its one-line summary
    out = subprocess.run([sys.executable, "-m", "ocitool", command, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith(f"usage: ocitool {command} ") and out.stderr == ""


@pytest.mark.parametrize(("args", "status", "message"), [
    (["pull"], 2, "the following arguments are required: IMAGE (see 'ocitool pull --help')"),
    (["pull", "--tls-verify", "maybe", "x"], 2, "argument --tls-verify: 'maybe' is not true or false"),
    (["--log-level", "loud", "images"], 2, "argument --log-level: invalid choice: 'loud'"),
    (["frobnicate"], 2, "argument COMMAND: invalid choice: 'frobnicate'"),
    (["run", "--no-such-flag", "busybox"], 125, "unrecognized arguments: --no-such-flag (see 'ocitool run --help')"),
])
def test_usage_errors_are_one_line(args, status, message):
    out = subprocess.run([sys.executable, "-m", "ocitool", *args], capture_output=True, text=True)
    assert out.returncode == status and out.stdout == ""
    assert out.stderr.startswith("ocitool: error: ") and message in out.stderr and out.stderr.count("\n") == 1


def test_progress_bars_on_a_terminal(ocitool, registry):
    """On a terminal each layer gets a bar redrawn in place; in a pipe, one plain line per blob."""
    import os
    import pty
    leader, follower = pty.openpty()
    command = [sys.executable, "-m", "ocitool", "--root", str(ocitool.root), "pull", f"{registry.host}/test/whiteouts"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=follower, env=ocitool.environment())
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    assert proc.wait(timeout=60) == 0
    os.close(leader)
    text = output.decode()
    assert "[" + "#" * 30 + "]" in text and "\x1b[2K" in text
    assert text.count("done") >= 3  # three layers
    piped = ocitool("pull", f"{registry.host}/test/zstd").stderr
    assert "\x1b" not in piped and "Copying blob" in piped


def test_debug_log_level_shows_traceback(ocitool):
    quiet = ocitool("pull", "UPPER", check=False)
    debug = ocitool("--log-level", "debug", "pull", "UPPER", check=False)
    assert "Traceback" not in quiet.stderr and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("ocitool: error:")
