"""``ocitool unpack`` end to end: same rootfs as umoci, bundles runc and crun can run, clean failures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import as_user, user_python
from support import images
from support.push import push_image
from support.treediff import differences

IMAGES = ["library/busybox:latest", "test/whiteouts:latest", "test/zstd:latest"]
# umoci 0.4.7 cannot read zstd layers; the zstd image holds busybox's very tree, so umoci
# unpacks its gzip twin for the comparison.
UMOCI_TWIN = {"test/zstd:latest": "library/busybox:latest"}


@pytest.fixture
def pulled(ocitool, registry):
    """An ocitool root with the test images pulled; returns (store path, ref name per repo)."""
    names = {}
    for repo in IMAGES:
        ocitool("pull", "-q", f"{registry.host}/{repo}")
        names[repo] = f"{registry.host}/{repo}"
    return ocitool.root / "images", names


@pytest.mark.parametrize("repo", IMAGES)
def test_rootfs_equals_umocis(ocitool, pulled, tmp_path, repo):
    store, names = pulled
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ocitool("unpack", names[repo], str(ours))
    twin = names[UMOCI_TWIN.get(repo, repo)]
    subprocess.run(["umoci", "unpack", "--image", f"{store}:{twin}", str(theirs)], check=True, capture_output=True)
    assert differences(ours / "rootfs", theirs / "rootfs") == []
    # The mtrees agree too, path by path and keyword by keyword.
    assert _mtree_entries(next(ours.glob("sha256_*.mtree"))) == _mtree_entries(next(theirs.glob("sha256_*.mtree")))


def _mtree_entries(path: Path) -> list[str]:
    """mtree lines without comments and with xattr keywords sorted (umoci's order varies)."""
    lines = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            words = line.split()
            lines.append(" ".join(words[:1] + sorted(words[1:])))
    return lines


def test_umoci_repack_sees_no_change_in_our_bundle(ocitool, pulled, tmp_path):
    store, names = pulled
    layout = tmp_path / "layout"
    shutil.copytree(store, layout)
    bundle = tmp_path / "bundle"
    ocitool("unpack", names["library/busybox:latest"], str(bundle))
    # umoci wants its own metadata file (format 2); our mtree is what it compares the rootfs against.
    record = json.loads((bundle / "ocitool.json").read_text())
    descriptor = {"mediaType": images.OCI_MANIFEST, "digest": record["manifest"],
                  "size": (layout / "blobs" / "sha256" / record["manifest"][7:]).stat().st_size}
    (bundle / "umoci.json").write_text(json.dumps({
        "umoci_version": "2", "from_descriptor_path": {"descriptor_walk": [descriptor]},
        "map_options": {"uid_mappings": None, "gid_mappings": None, "rootless": False}, "whiteout_mode": 0}))
    subprocess.run(["umoci", "repack", "--image", f"{layout}:repacked", str(bundle)], check=True,
                   capture_output=True)
    assert _manifest(layout, "repacked")["layers"] == _manifest(layout, names["library/busybox:latest"])[
        "layers"]  # no difference found: no new layer
    (bundle / "rootfs" / "etc" / "motd").write_text("changed\n")
    subprocess.run(["umoci", "repack", "--image", f"{layout}:changed", str(bundle)], check=True, capture_output=True)
    assert len(_manifest(layout, "changed")["layers"]) == 2  # and a real change is seen


def _manifest(layout: Path, ref: str) -> dict:
    index = json.loads((layout / "index.json").read_text())
    descriptor = next(d for d in index["manifests"]
                      if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref)
    return json.loads((layout / "blobs" / "sha256" / descriptor["digest"][7:]).read_text())


def test_bundle_record_and_config(ocitool, pulled, tmp_path, registry):
    _, names = pulled
    bundle = tmp_path / "bundle"
    ocitool("unpack", names["library/busybox:latest"], str(bundle))
    record = json.loads((bundle / "ocitool.json").read_text())
    image = registry.images["library/busybox:latest"]
    assert record["manifest"] == image.digest
    assert record["layers"] == [layer.digest for layer in image.layers]
    assert record["rootless"] is False and (bundle / record["mtree"]).exists()
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] == ["sh"] and config["root"]["path"] == "rootfs"


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_runc_and_crun_run_our_bundle(ocitool, pulled, tmp_path, runtime):
    _, names = pulled
    bundle = tmp_path / "bundle"
    ocitool("unpack", names["library/busybox:latest"], str(bundle))
    for args, expected in ((["true"], ""), (["echo", "hello", "bundle"], "hello bundle\n")):
        config = json.loads((bundle / "config.json").read_text())
        config["process"]["args"] = args
        (bundle / "config.json").write_text(json.dumps(config))
        result = _run_with(runtime, bundle, tmp_path)
        assert (result.returncode, result.stdout) == (0, expected), result.stderr


def _run_with(runtime: str, bundle: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``runc run`` or ``crun run``; crun 1.8 refuses this host's hybrid cgroup layout unless the
    near-empty unified mount is hidden in a private mount namespace."""
    command = [runtime, "--root", str(tmp_path / f"{runtime}-state"), "run", "--bundle", str(bundle), "ocitool-t"]
    if runtime == "crun" and os.path.ismount("/sys/fs/cgroup/unified"):
        command = ["unshare", "-m", "sh", "-c", 'umount /sys/fs/cgroup/unified && exec "$@"', "sh", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_unpack_from_skopeo_layout(ocitool, registry, tmp_path):
    layout = tmp_path / "skopeo-layout"
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{registry.host}/test/whiteouts:latest",
                    f"oci:{layout}:mine"], check=True, capture_output=True)
    ocitool("unpack", f"oci:{layout}:mine", str(tmp_path / "b1"))
    ocitool("unpack", f"oci:{layout}", str(tmp_path / "b2"))  # a single image needs no ref
    assert (tmp_path / "b1" / "rootfs" / "opq" / "new").is_file()
    assert not (tmp_path / "b1" / "rootfs" / "a" / "file1").exists()
    assert not (ocitool.root / "images").exists()  # nothing was pulled into the store


def test_pull_policies(ocitool, registry, tmp_path):
    ref = f"{registry.host}/library/busybox"
    never = ocitool("unpack", "--pull", "never", ref, str(tmp_path / "b0"), check=False)
    assert never.returncode != 0 and "--pull=never" in never.stderr and not (tmp_path / "b0").exists()
    ocitool("unpack", ref, str(tmp_path / "b1"))  # missing: pulls
    ocitool("unpack", "--pull", "never", ref, str(tmp_path / "b2"))
    assert "Copying blob" in ocitool("unpack", "--pull", "always", ref, str(tmp_path / "b3")).stderr


def test_existing_bundle_is_refused(ocitool, pulled, tmp_path):
    _, names = pulled
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    result = ocitool("unpack", names["library/busybox:latest"], str(tmp_path / "full"), check=False)
    assert result.returncode != 0 and "not an empty directory" in result.stderr
    (tmp_path / "empty").mkdir()
    ocitool("unpack", names["library/busybox:latest"], str(tmp_path / "empty"))


def test_hostile_layer_leaves_no_half_made_bundle(ocitool, registry, tmp_path):
    bait = tmp_path / "outside"
    bait.mkdir()
    layer = images.tar_layer([images.Symlink("escape", str(bait)), images.File("escape/owned", b"pwned")])
    push_image(registry.url, "test/hostile", "latest", images.make_image([layer]))
    result = ocitool("unpack", f"{registry.host}/test/hostile", str(tmp_path / "bundle"), check=False)
    assert not (bait / "owned").exists()
    if result.returncode != 0:
        assert result.stderr.startswith("ocitool: error:") and not (tmp_path / "bundle").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]
    else:
        assert (tmp_path / "bundle" / "rootfs" / str(bait).lstrip("/") / "owned").read_bytes() == b"pwned"


def test_corrupt_layer_fails_cleanly(ocitool, registry, tmp_path):
    good = images.make_image([images.tar_layer([images.File("a", b"a" * 1000)])])
    truncated = images.Blob(good.layers[0].media_type, good.layers[0].data[:-20])
    bad = images.make_image([images.tar_layer([images.File("a", b"a" * 1000)])])
    manifest = json.loads(bad.manifest.data)
    manifest["layers"][0] = truncated.descriptor()
    broken = images.Image(bad.config, [truncated], images.Blob(images.OCI_MANIFEST, json.dumps(manifest).encode()))
    push_image(registry.url, "test/truncated", "latest", broken)
    result = ocitool("unpack", f"{registry.host}/test/truncated", str(tmp_path / "bundle"), check=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("ocitool: error:")]
    assert result.returncode != 0 and len(errors) == 1 and "gzip" in errors[0], result.stderr
    assert not (tmp_path / "bundle").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]


def test_spec_command(ocitool, tmp_path):
    ocitool("spec", "--bundle", str(tmp_path))
    spec = json.loads((tmp_path / "config.json").read_text())
    assert spec["process"]["args"] == ["sh"] and "user" not in [n["type"] for n in spec["linux"]["namespaces"]]
    assert ocitool("spec", "--bundle", str(tmp_path), check=False).returncode != 0
    rootless = tmp_path / "rootless"
    rootless.mkdir()
    ocitool("spec", "--rootless", "--bundle", str(rootless))
    assert "user" in [n["type"] for n in json.loads((rootless / "config.json").read_text())["linux"]["namespaces"]]


@pytest.mark.parametrize("repo", IMAGES)
def test_rootless_unpack_as_unprivileged_user_matches_umoci(registry, unprivileged_user, user_dir, repo):
    """As a user who is not root: ocitool unpack (rootless automatically) against umoci --rootless."""
    root, ours, theirs = user_dir / "root", user_dir / "ours", user_dir / "theirs"
    ref = f"{registry.host}/{repo}"
    twin = f"{registry.host}/{UMOCI_TWIN.get(repo, repo)}"
    pulled = subprocess.run(as_user(unprivileged_user, [user_python(), "-m", "ocitool", "--root", str(root),
                                                        "unpack", ref, str(ours)], user_dir),
                            capture_output=True, text=True, timeout=120)
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads((ours / "ocitool.json").read_text())["rootless"] is True
    if twin != ref:
        subprocess.run(as_user(unprivileged_user, [user_python(), "-m", "ocitool", "--root", str(root), "pull", "-q",
                                                   twin], user_dir), check=True, capture_output=True, timeout=120)
    umoci = subprocess.run(as_user(unprivileged_user, ["umoci", "unpack", "--rootless", "--image",
                                                       f"{root}/images:{twin}", str(theirs)], user_dir),
                           capture_output=True, text=True, timeout=120)
    assert umoci.returncode == 0, umoci.stderr
    # umoci drops some rootless ownership xattrs (see tests/test_extract.py); compare the rest.
    assert differences(ours / "rootfs", theirs / "rootfs", ignore_xattrs=True) == []
