"""Our store is a standard OCI layout: skopeo and umoci read what ocitool pulled."""

from __future__ import annotations

import json
import subprocess

BUSYBOX = "docker.io/library/busybox:latest"


def _pull_all(ocitool, registry):
    ocitool.write_config(f'[registries."docker.io"]\nmirrors = ["{registry.host}"]\n')
    ocitool("pull", "busybox")
    ocitool("pull", f"{registry.host}/test/whiteouts")
    ocitool("pull", f"{registry.host}/test/docker-busybox")


def test_skopeo_inspects_and_copies_our_store(ocitool, registry, tmp_path):
    _pull_all(ocitool, registry)
    store = ocitool.root / "images"
    out = subprocess.run(["skopeo", "inspect", f"oci:{store}:{BUSYBOX}"], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout)["Digest"] == registry.images["library/busybox:latest"].digest
    subprocess.run(["skopeo", "copy", f"oci:{store}:{registry.host}/test/docker-busybox:latest",
                    f"oci:{tmp_path / 'copy'}:x"], capture_output=True, check=True)


def test_umoci_unpacks_our_store(ocitool, registry, tmp_path):
    _pull_all(ocitool, registry)
    store = ocitool.root / "images"
    for ref, probe in ((BUSYBOX, "bin/busybox"), (f"{registry.host}/test/whiteouts:latest", "a/file2"),
                       (f"{registry.host}/test/docker-busybox:latest", "bin/sh")):
        bundle = tmp_path / ref.replace("/", "_").replace(":", "_")
        subprocess.run(["umoci", "unpack", "--image", f"{store}:{ref}", str(bundle)], capture_output=True,
                       check=True)
        assert (bundle / "rootfs" / probe).exists() or (bundle / "rootfs" / probe).is_symlink()
    listed = subprocess.run(["umoci", "ls", "--layout", str(store)], capture_output=True, text=True, check=True)
    assert BUSYBOX in listed.stdout.split()
