"""The default runtime configuration (runtime-spec config.json) of a bundle.

``default_spec`` is what ``ocitool spec`` writes and what image conversion starts from:
the same container ``runc spec`` (and ``runc spec --rootless``) describes, with Docker's
default capability set instead of runc's three, a writable root and no terminal, so that
it runs an image's command the way ``docker run`` would.
"""

from __future__ import annotations

import json
import os

from ocitool.errors import OcitoolError
from ocitool.fsutil import atomic_write

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from typing import Any

OCI_VERSION = "1.0.2"
CONFIG_NAME = "config.json"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Docker's default capabilities (moby oci/caps/defaults.go), in its order.
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
    "/proc/scsi", "/sys/devices/virtual/tpm",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

_NO_EXEC = ["nosuid", "noexec", "nodev"]


def default_spec(rootless: bool = False, uid: int | None = None,
                 gid: int | None = None) -> dict[str, Any]:
    """A fresh default config.json, as a dict the caller may modify.

    With ``rootless`` the container gets a user namespace mapping its root to ``uid``
    and ``gid`` on the host (default: the caller's effective ids), and drops what an
    unprivileged user cannot set up, as ``runc spec --rootless`` does: the network
    namespace, the sysfs and cgroup mounts (``/sys`` becomes a read-only bind), the
    cgroup namespace, ``gid=``/``uid=`` mount options and all cgroup resources.
    ``uid`` and ``gid`` are ignored without ``rootless``.
    """
    spec = {
        "ociVersion": OCI_VERSION,
        "process": _process(),
        "root": {"path": "rootfs", "readonly": False},
        "hostname": "ocitool",
        "mounts": _mounts(),
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": kind} for kind in
                           ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
    if rootless:
        _make_rootless(spec, os.geteuid() if uid is None else uid,
                       os.getegid() if gid is None else gid)
    return spec


def _process() -> dict[str, Any]:
    caps = list(DEFAULT_CAPABILITIES)
    return {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": ["sh"],
        "env": [f"PATH={DEFAULT_PATH}", "TERM=xterm"],
        "cwd": "/",
        "capabilities": {"bounding": caps, "effective": list(caps), "permitted": list(caps)},
        # Above the host's hard limit would need CAP_SYS_RESOURCE, which we do not grant.
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    }


def _mounts() -> list[dict[str, Any]]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": [*_NO_EXEC, "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": list(_NO_EXEC)},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": [*_NO_EXEC, "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": [*_NO_EXEC, "relatime", "ro"]},
    ]


def _make_rootless(spec: dict[str, Any], uid: int, gid: int) -> None:
    linux = spec["linux"]
    linux["namespaces"] = [ns for ns in linux["namespaces"]
                           if ns["type"] not in ("network", "cgroup")] + [{"type": "user"}]
    linux["uidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": gid, "size": 1}]
    del linux["resources"]
    mounts = []
    for mount in spec["mounts"]:
        if mount["destination"] == "/sys/fs/cgroup":
            continue
        if mount["destination"] == "/sys":
            mount = {"destination": "/sys", "type": "none", "source": "/sys",
                     "options": ["rbind", *_NO_EXEC, "ro"]}
        elif "options" in mount:
            mount["options"] = [opt for opt in mount["options"]
                                if not opt.startswith(("uid=", "gid="))]
        mounts.append(mount)
    spec["mounts"] = mounts


def write_spec(bundle: str | os.PathLike[str], spec: dict[str, Any]) -> None:
    """Write ``spec`` as ``bundle/config.json`` (mode 0644), replacing any old one atomically.

    Runtimes and concurrent readers see the old file or the new one, never a partial one.
    """
    path = os.path.join(bundle, CONFIG_NAME)
    try:
        atomic_write(path, (json.dumps(spec, indent=2) + "\n").encode(), 0o644)
    except OSError as exc:
        raise OcitoolError(f"cannot write {path}: {exc.strerror or exc}") from exc


def write_new_spec(bundle: str | os.PathLike[str], rootless: bool) -> None:
    """``runc spec``: write the default config.json into ``bundle``, refusing to replace one."""
    path = os.path.join(bundle, CONFIG_NAME)
    if os.path.exists(path):
        raise OcitoolError(f"{path} already exists; remove it first")
    write_spec(bundle, default_spec(rootless=rootless))
