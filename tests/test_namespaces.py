"""Namespaces: parsing ``linux.namespaces`` and mappings, joining by path, writing id maps.

Anything that joins or creates a namespace runs in a forked child (``in_child`` from
test_mounts), so the pytest process stays where it is.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ocitool.errors import OcitoolError
from ocitool.runtime import syscalls
from ocitool.runtime.namespaces import (
    NAMESPACE_FLAGS,
    PROC_NAMES,
    IdMapping,
    Namespace,
    join_namespaces,
    parse_id_mappings,
    parse_namespaces,
    unshare_flags,
    write_id_mappings,
)
from support.fork import in_child

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

BIG_MAP = [{"containerID": 0, "hostID": 100000, "size": 65536}]


def become(uid: int, gid: int) -> None:
    """Drop to ``uid``/``gid`` for good (in a child), as dumpable as a process the user started.

    Changing ids clears the dumpable flag, which would leave /proc/<pid>/uid_map owned by root.
    """
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    syscalls.prctl(syscalls.PR_SET_DUMPABLE, 1)


# --- parsing -------------------------------------------------------------------------------

def test_flags_and_proc_names() -> None:
    assert NAMESPACE_FLAGS["network"] == syscalls.CLONE_NEWNET and NAMESPACE_FLAGS["mount"] == syscalls.CLONE_NEWNS
    assert PROC_NAMES == {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts",
                          "user": "user", "cgroup": "cgroup", "time": "time"}
    assert all(Path(f"/proc/self/ns/{name}").exists() for name in PROC_NAMES.values())


def test_parse_and_unshare_flags() -> None:
    linux = {"namespaces": [{"type": "pid"}, {"type": "uts", "path": "/proc/1/ns/uts"}, {"type": "mount"},
                            {"type": "user"}],
             "uidMappings": BIG_MAP, "gidMappings": BIG_MAP}
    namespaces = parse_namespaces(linux)
    assert namespaces == [Namespace("pid"), Namespace("uts", "/proc/1/ns/uts"), Namespace("mount"),
                          Namespace("user")]
    assert unshare_flags(namespaces) == syscalls.CLONE_NEWPID | syscalls.CLONE_NEWNS | syscalls.CLONE_NEWUSER
    assert parse_namespaces({}) == [] and unshare_flags([]) == 0
    assert parse_id_mappings(BIG_MAP, "linux.uidMappings") == [IdMapping(0, 100000, 65536)]


@pytest.mark.parametrize(("linux", "message"), [
    ({"namespaces": {"type": "pid"}}, r"linux\.namespaces: must be a list"),
    ({"namespaces": ["pid"]}, r"linux\.namespaces\[0\]: must be an object"),
    ({"namespaces": [{"type": "pid"}, {"type": "net"}]}, r"linux\.namespaces\[1\]\.type: 'net' is not one of"),
    ({"namespaces": [{"type": "ipc"}, {"type": "uts"}, {"type": "ipc"}]},
     r"linux\.namespaces\[2\]\.type: 'ipc' is listed twice"),
    ({"namespaces": [{"type": "uts", "path": "proc/1/ns/uts"}]},
     r"linux\.namespaces\[0\]\.path: must be an absolute path"),
    ({"namespaces": [{"type": "pid"}], "uidMappings": BIG_MAP}, r"linux\.uidMappings: mappings need a user namespace"),
    ({"namespaces": [{"type": "user"}], "uidMappings": BIG_MAP}, r"needs both uidMappings and gidMappings"),
    ({"namespaces": [{"type": "user"}]}, r"needs both uidMappings and gidMappings"),
    ({"namespaces": [{"type": "user", "path": "/proc/1/ns/user"}], "uidMappings": BIG_MAP, "gidMappings": BIG_MAP},
     r"a joined user namespace \(with a path\) keeps its own mappings"),
    ({"namespaces": [{"type": "user"}], "uidMappings": {"size": 1}, "gidMappings": BIG_MAP},
     r"linux\.uidMappings: must be a list"),
    ({"namespaces": [{"type": "user"}], "uidMappings": BIG_MAP,
      "gidMappings": [{"containerID": 0, "hostID": -1, "size": 1}]}, r"linux\.gidMappings\[0\]\.hostID: must be"),
    ({"namespaces": [{"type": "user"}], "uidMappings": [{"containerID": 0, "hostID": 0, "size": 0}],
      "gidMappings": BIG_MAP}, r"linux\.uidMappings\[0\]\.size: must not be 0"),
    ({"namespaces": [{"type": "user"}], "uidMappings": [{"containerID": True, "hostID": 0, "size": 1}],
      "gidMappings": BIG_MAP}, r"linux\.uidMappings\[0\]\.containerID: must be an integer"),
    ({"namespaces": [{"type": "user"}], "gidMappings": BIG_MAP,
      "uidMappings": [{"containerID": i, "hostID": i, "size": 1} for i in range(341)]}, r"at most 340 mappings"),
])
def test_parse_errors_name_the_field(linux: dict[str, Any], message: str) -> None:
    with pytest.raises(OcitoolError, match=message):
        parse_namespaces(linux)


# --- joining -------------------------------------------------------------------------------

@contextmanager
def holder(setup: Callable[[], None]) -> Iterator[int]:
    """A child that runs ``setup`` (making namespaces) and then blocks until the block ends; yields its pid."""
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.close(stop_w)
            setup()
            os.write(ready_w, b"ok")
            os.read(stop_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(stop_r)
    try:
        assert os.read(ready_r, 2) == b"ok", "the namespace holder failed"
        yield pid
    finally:
        os.close(stop_w)
        os.close(ready_r)
        os.waitpid(pid, 0)


def named_uts(name: str) -> Callable[[], None]:
    def setup() -> None:
        syscalls.unshare(syscalls.CLONE_NEWUTS)
        syscalls.sethostname(name)
    return setup


def test_join_uts_namespace_by_path() -> None:
    with holder(named_uts("joined-by-path")) as pid:
        path = f"/proc/{pid}/ns/uts"
        namespaces = parse_namespaces({"namespaces": [{"type": "uts", "path": path}]})
        assert in_child(lambda: (join_namespaces(namespaces), socket.gethostname())[1]) == "joined-by-path"
    assert socket.gethostname() != "joined-by-path"


@pytest.mark.parametrize(("namespace", "message"), [
    (Namespace("uts", "/proc/self/ns/net"), r"linux\.namespaces \(uts\)\.path: /proc/self/ns/net is a network "
                                            r"namespace, not uts"),
    (Namespace("ipc", "/etc/hostname"), r"/etc/hostname is not a namespace file"),
    (Namespace("ipc", "/no/such/ns"), r"cannot open /no/such/ns: No such file"),
])
def test_join_refuses_the_wrong_file(namespace: Namespace, message: str) -> None:
    with pytest.raises(OcitoolError, match=message):
        in_child(lambda: join_namespaces([namespace]))


def test_unprivileged_joins_user_namespace_first(unprivileged_user: tuple[int, int]) -> None:
    """Joining the holder's uts namespace needs the capabilities its user namespace gives."""
    uid, gid = unprivileged_user

    def setup() -> None:
        become(uid, gid)
        syscalls.unshare(syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWUTS)
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
        Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
        syscalls.sethostname("users-uts")

    with holder(setup) as pid:
        namespaces = [Namespace("uts", f"/proc/{pid}/ns/uts"), Namespace("user", f"/proc/{pid}/ns/user")]

        def join() -> tuple[str, str]:
            become(uid, gid)
            join_namespaces(namespaces)
            return socket.gethostname(), Path("/proc/self/uid_map").read_text().split()

        assert in_child(join) == ("users-uts", ["0", str(uid), "1"])


def test_root_joins_host_namespaces_before_the_user_namespace() -> None:
    """Once in the container's user namespace, root has no capabilities left for the host's."""
    def setup() -> None:
        syscalls.unshare(syscalls.CLONE_NEWUSER)

    with holder(setup) as pid:
        write_id_mappings(pid, BIG_MAP, BIG_MAP)
        namespaces = [Namespace("user", f"/proc/{pid}/ns/user"), Namespace("network", f"/proc/{os.getpid()}/ns/net")]
        assert in_child(lambda: (join_namespaces(namespaces), Path("/proc/self/uid_map").read_text().split())[1]) \
            == ["0", "100000", "65536"]


def test_joining_the_user_namespace_we_are_in_is_a_no_op() -> None:
    namespaces = [Namespace("user", "/proc/self/ns/user"), Namespace("uts", "/proc/self/ns/uts")]
    assert in_child(lambda: join_namespaces(namespaces)) is None


# --- id mappings ---------------------------------------------------------------------------

def map_and_report(uid_mappings: list[dict[str, int]], gid_mappings: list[dict[str, int]]) -> dict[str, Any]:
    """Fork a child into a new user namespace, map it with write_id_mappings, return what it sees."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            for fd in (ready_r, go_w, report_r):
                os.close(fd)
            syscalls.unshare(syscalls.CLONE_NEWUSER)
            os.write(ready_w, b"u")
            os.read(go_r, 1)
            seen = [Path(f"/proc/self/{name}").read_text() for name in ("uid_map", "gid_map", "setgroups")]
            os.write(report_w, "|".join([*seen, str(os.getuid()), str(os.getgid())]).encode())
        finally:
            os._exit(0)
    for fd in (ready_w, go_r, report_w):
        os.close(fd)
    try:
        assert os.read(ready_r, 1) == b"u"
        write_id_mappings(pid, uid_mappings, gid_mappings)
    finally:
        os.close(go_w)
        report = os.read(report_r, 4096).decode()
        for fd in (ready_r, report_r):
            os.close(fd)
        os.waitpid(pid, 0)
    uid_map, gid_map, setgroups, uid, gid = report.split("|")
    return {"uid_map": uid_map.split(), "gid_map": gid_map.split(), "setgroups": setgroups.strip(),
            "ids": (int(uid), int(gid))}


def test_root_writes_any_mapping() -> None:
    uids = [{"containerID": 0, "hostID": 100000, "size": 1000}, {"containerID": 1000, "hostID": 0, "size": 1}]
    seen = map_and_report(uids, BIG_MAP)
    assert seen["uid_map"] == ["0", "100000", "1000", "1000", "0", "1"]
    assert seen["gid_map"] == ["0", "100000", "65536"]
    assert seen["setgroups"] == "allow"
    assert seen["ids"] == (1000, 65534)  # host root is container uid 1000; host gid 0 is unmapped


def test_unprivileged_maps_its_own_ids(unprivileged_user: tuple[int, int]) -> None:
    uid, gid = unprivileged_user

    def work() -> dict[str, Any]:
        become(uid, gid)
        return map_and_report([{"containerID": 0, "hostID": uid, "size": 1}],
                              [{"containerID": 0, "hostID": gid, "size": 1}])

    seen = in_child(work)
    assert seen["uid_map"] == ["0", str(uid), "1"] and seen["gid_map"] == ["0", str(gid), "1"]
    assert seen["setgroups"] == "deny" and seen["ids"] == (0, 0)


def test_unprivileged_wider_mapping_needs_newuidmap(unprivileged_user: tuple[int, int]) -> None:
    uid, gid = unprivileged_user

    def work() -> None:
        become(uid, gid)
        os.environ["PATH"] = "/nonexistent"  # as on a host without the uidmap package
        map_and_report(BIG_MAP, [{"containerID": 0, "hostID": gid, "size": 1}])

    with pytest.raises(OcitoolError, match=r"linux\.uidMappings: .*need newuidmap from the 'uidmap' package"):
        in_child(work)


@pytest.mark.skipif(shutil.which("newuidmap") is None, reason="newuidmap is not installed")
def test_unprivileged_mapping_outside_subordinate_ids_is_refused(unprivileged_user: tuple[int, int]) -> None:
    uid, gid = unprivileged_user
    far = [{"containerID": 0, "hostID": uid, "size": 1}, {"containerID": 1, "hostID": 4_000_000_000, "size": 1000}]

    def work() -> None:
        become(uid, gid)
        map_and_report(far, [{"containerID": 0, "hostID": gid, "size": 1}])

    with pytest.raises(OcitoolError, match=r"linux\.uidMappings: host uids 4000000000-4000000999 are not yours: "
                                           r"/etc/subuid grants"):
        in_child(work)


@pytest.mark.skipif(shutil.which("newuidmap") is None, reason="newuidmap is not installed")
def test_unprivileged_wider_mapping_through_newuidmap(unprivileged_user: tuple[int, int], tmp_path: Path) -> None:
    """Subordinate ids granted by files bound over /etc/subuid and /etc/subgid in the child only."""
    uid, gid = unprivileged_user
    grant = tmp_path / "subids"
    grant.write_text(f"{pwd.getpwuid(uid).pw_name}:200000:65536\n")
    grant.chmod(0o644)

    def work() -> dict[str, Any]:
        for path in ("/etc/subuid", "/etc/subgid"):
            syscalls.mount(str(grant), path, None, syscalls.MS_BIND)
        become(uid, gid)
        return map_and_report([{"containerID": 0, "hostID": uid, "size": 1},
                               {"containerID": 1, "hostID": 200000, "size": 65536}],
                              [{"containerID": 0, "hostID": gid, "size": 1},
                               {"containerID": 1, "hostID": 200000, "size": 1000}])

    seen = in_child(work, syscalls.CLONE_NEWNS)
    assert seen["uid_map"] == ["0", str(uid), "1", "1", "200000", "65536"]
    assert seen["gid_map"] == ["0", str(gid), "1", "1", "200000", "1000"]
    assert seen["ids"] == (0, 0)


def test_bad_mapping_passed_to_write_is_refused() -> None:
    with pytest.raises(OcitoolError, match=r"linux\.uidMappings\[0\]\.size: must not be 0"):
        write_id_mappings(os.getpid(), [{"containerID": 0, "hostID": 0, "size": 0}], BIG_MAP)
