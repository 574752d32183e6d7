"""The default runtime config (``ocitool spec``) and how it is written to a bundle."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from ocitool.bundle.spec import DEFAULT_CAPABILITIES, default_spec, write_spec
from ocitool.errors import OcitoolError

DOCKER_CAPS = {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
               "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
               "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}


def _mount(spec: dict, destination: str) -> dict | None:
    return next((m for m in spec["mounts"] if m["destination"] == destination), None)


def _namespaces(spec: dict) -> list[str]:
    return [ns["type"] for ns in spec["linux"]["namespaces"]]


def _runc_spec(tmp_path: Path, *flags: str) -> dict:
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    subprocess.run(["runc", "spec", *flags], cwd=tmp_path, check=True)
    return json.loads((tmp_path / "config.json").read_text())


@pytest.mark.parametrize("path, expected", [
    (("ociVersion",), "1.0.2"),
    (("process", "terminal"), False),
    (("process", "args"), ["sh"]),
    (("process", "env"), ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                          "TERM=xterm"]),
    (("process", "cwd"), "/"),
    (("process", "user"), {"uid": 0, "gid": 0}),
    (("process", "noNewPrivileges"), True),
    (("process", "rlimits"), [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]),
    (("root",), {"path": "rootfs", "readonly": False}),
    (("linux", "resources"), {"devices": [{"allow": False, "access": "rwm"}]}),
    (("linux", "readonlyPaths"), ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                  "/proc/sysrq-trigger"]),
])
def test_default_fields(path: tuple[str, ...], expected: object) -> None:
    value = default_spec()
    for key in path:
        value = value[key]
    assert value == expected


def test_default_capabilities_are_dockers_and_not_inheritable_or_ambient() -> None:
    caps = default_spec()["process"]["capabilities"]
    assert set(caps) == {"bounding", "effective", "permitted"}
    for kind in ("bounding", "effective", "permitted"):
        assert set(caps[kind]) == DOCKER_CAPS and len(caps[kind]) == 14
    assert "CAP_SYS_RESOURCE" not in DEFAULT_CAPABILITIES


def test_default_namespaces_and_masks() -> None:
    spec = default_spec()
    assert _namespaces(spec) == ["pid", "network", "ipc", "uts", "mount", "cgroup"]
    assert {"/proc/kcore", "/proc/keys", "/sys/firmware", "/proc/timer_list"} <= set(
        spec["linux"]["maskedPaths"])
    assert "uidMappings" not in spec["linux"]
    assert spec["hostname"]


def test_default_mounts_are_runc_spec_mounts(tmp_path: Path) -> None:
    assert default_spec()["mounts"] == _runc_spec(tmp_path)["mounts"]


def test_rootless_maps_root_to_given_ids() -> None:
    linux = default_spec(rootless=True, uid=1234, gid=5678)["linux"]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": 1234, "size": 1}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": 5678, "size": 1}]


def test_rootless_defaults_to_caller_ids() -> None:
    linux = default_spec(rootless=True)["linux"]
    assert linux["uidMappings"][0]["hostID"] == os.geteuid()
    assert linux["gidMappings"][0]["hostID"] == os.getegid()


def test_rootless_drops_what_an_unprivileged_user_cannot_set_up() -> None:
    spec = default_spec(rootless=True, uid=1000, gid=1000)
    assert _namespaces(spec) == ["pid", "ipc", "uts", "mount", "user"]
    assert "resources" not in spec["linux"]
    assert _mount(spec, "/sys/fs/cgroup") is None
    assert _mount(spec, "/sys") == {"destination": "/sys", "type": "none", "source": "/sys",
                                    "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
    assert "gid=5" not in _mount(spec, "/dev/pts")["options"]


def test_rootless_mounts_are_runc_rootless_mounts_without_cgroup(tmp_path: Path) -> None:
    runc_mounts = [m for m in _runc_spec(tmp_path, "--rootless")["mounts"]
                   if m["destination"] != "/sys/fs/cgroup"]
    ours = default_spec(rootless=True)["mounts"]
    assert [m["destination"] for m in ours] == [m["destination"] for m in runc_mounts]
    for mine, theirs in zip(ours, runc_mounts):
        assert (mine["type"], mine["source"]) == (theirs["type"], theirs["source"])
        assert sorted(mine.get("options", [])) == sorted(theirs.get("options", []))


def test_specs_are_independent_copies() -> None:
    first = default_spec()
    first["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    first["mounts"][1]["options"].append("ro")
    second = default_spec()
    assert "CAP_SYS_ADMIN" not in second["process"]["capabilities"]["bounding"]
    assert "ro" not in second["mounts"][1]["options"]
    assert "CAP_SYS_ADMIN" not in second["process"]["capabilities"]["effective"]


def test_write_spec(tmp_path: Path) -> None:
    spec = default_spec()
    write_spec(tmp_path, spec)
    path = tmp_path / "config.json"
    assert json.loads(path.read_text()) == spec
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text().startswith('{\n  "ociVersion"')
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_write_spec_replaces_the_old_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("old")
    write_spec(tmp_path, {"ociVersion": "1.0.2"})
    assert json.loads((tmp_path / "config.json").read_text()) == {"ociVersion": "1.0.2"}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_write_spec_failures_are_user_errors_and_leave_nothing(tmp_path: Path) -> None:
    with pytest.raises(OcitoolError, match="cannot write"):
        write_spec(tmp_path / "missing", default_spec())
    (tmp_path / "config.json").mkdir()
    with pytest.raises(OcitoolError, match="cannot write"):
        write_spec(tmp_path, default_spec())
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
