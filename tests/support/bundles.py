"""Runtime-spec bundles built from Debian's busybox-static, for the runtime tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ocitool.bundle.spec import default_spec

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "echo", "cat", "id", "hostname", "ls", "sleep", "true", "false", "env", "pwd", "mkdir", "touch",
           "grep", "head", "tr", "wc", "readlink", "mount", "ps", "kill", "stat", "dd", "seq", "test", "printf")


def make_rootfs(rootfs: Path) -> Path:
    """A minimal rootfs: busybox, its applets, /etc/passwd and /etc/group."""
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    for directory in ("proc", "sys", "dev", "tmp", "etc", "root"):
        (rootfs / directory).mkdir(exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return rootfs


def make_bundle(directory: Path, args: list[str], rootless: bool = False, uid: int | None = None,
                gid: int | None = None, **changes: Any) -> Path:
    """A bundle running ``args``; ``changes`` are applied as paths split by ``__``, e.g. ``process__cwd="/tmp"``.

    ``rootless`` with ``uid``/``gid`` maps the container's root to that host user.
    """
    directory.mkdir(parents=True, exist_ok=True)
    make_rootfs(directory / "rootfs")
    spec = default_spec(rootless=rootless, uid=uid, gid=gid)
    spec["process"]["args"] = args
    for dotted, value in changes.items():
        set_field(spec, dotted.split("__"), value)
    write_config(directory, spec)
    return directory


def set_field(document: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        document = document.setdefault(key, {})
    document[path[-1]] = value


def write_config(bundle: Path, spec: dict[str, Any]) -> None:
    (bundle / "config.json").write_text(json.dumps(spec, indent=2))


def read_config(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "config.json").read_text())
