"""Tests for ocitool.runtime.cgroups: the v1/v2 plans (pure), then real cgroups on this host.

The real tests use whatever the host runs: cgroup v1 (or hybrid) hierarchies, or pure cgroup v2.
cgroup v2 is exercised in the cgroup2 hierarchy too (the hybrid ``unified`` mount here), and
through automatic detection in a private mount namespace with cgroup2 mounted on /sys/fs/cgroup.
Every test cgroup lives under a per-run parent; a fixture checks that nothing is left behind
in any hierarchy and restores the cgroup2 root's ``cgroup.subtree_control``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocitool.errors import OcitoolError
from ocitool.runtime import cgroups
from ocitool.runtime.cgroups import V1Manager, V2Manager, Write, cgroup_manager, manager_from_state

MIB = 1 << 20
ROOT = cgroups.CGROUP_ROOT
REPO = Path(__file__).resolve().parents[1]


def _cgroup_mounts() -> list[tuple[str, str]]:
    """(mountpoint, fstype) of every cgroup mount, from /proc/self/mounts."""
    with open("/proc/self/mounts", encoding="utf-8") as file:
        return [(fields[1], fields[2]) for fields in map(str.split, file) if fields[2] in ("cgroup", "cgroup2")]


MOUNTS = _cgroup_mounts()
PURE_V2 = (ROOT, "cgroup2") in MOUNTS
CGROUP2_ROOT = ROOT if PURE_V2 else next((mp for mp, fstype in MOUNTS if fstype == "cgroup2"), None)
IS_ROOT = os.geteuid() == 0

needs_root = pytest.mark.skipif(not IS_ROOT or not MOUNTS, reason="needs root and mounted cgroups")
needs_v1 = pytest.mark.skipif(not IS_ROOT or PURE_V2 or not os.path.isdir(f"{ROOT}/memory"),
                              reason="needs root on a cgroup v1 (or hybrid) host")
needs_cgroup2 = pytest.mark.skipif(not IS_ROOT or CGROUP2_ROOT is None, reason="needs root and a cgroup2 mount")


def _files(plan: list[Write]) -> list[tuple[str, str]]:
    """The (file, value) each write would make when its first choice exists."""
    return [write.choices[0] for write in plan]


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as file:
        return file.read().strip()


# ---------------------------------------------------------------- conversions and plans

@pytest.mark.parametrize(("shares", "weight"), [(2, 1), (1024, 39), (512, 20), (262144, 10000), (1, 1), (10**6, 10000)])
def test_cpu_shares_to_weight(shares: int, weight: int) -> None:
    assert cgroups.cpu_weight(shares) == weight


@pytest.mark.parametrize(("blkio", "weight"), [(10, 1), (500, 4950), (1000, 10000), (100, 910)])
def test_blkio_weight_to_io_weight(blkio: int, weight: int) -> None:
    assert cgroups.io_weight(blkio) == weight


@pytest.mark.parametrize(("swap", "limit", "expected"), [
    (None, None, None),               # nothing asked
    (None, 100, None),                # limit only: swap left alone
    (None, -1, -1),                   # unlimited memory: unlimited swap (runc)
    (-1, 100, -1),
    (300, 100, 200),                  # memory+swap 300 = memory 100 + swap 200
    (100, 100, 0),                    # no swap at all
    (300, -1, 300),
])
def test_swap_conversion(swap: int | None, limit: int | None, expected: int | None) -> None:
    assert cgroups.swap_max(swap, limit) == expected


def test_swap_without_limit_is_refused_on_v2() -> None:
    with pytest.raises(OcitoolError, match=r"^linux\.resources\.memory\.swap: needs linux\.resources\.memory\.limit"):
        cgroups.v2_plan({"memory": {"swap": 300}})


V2_TABLE = [
    ({"memory": {"limit": 16 * MIB, "swap": 32 * MIB, "reservation": 8 * MIB}},
     [("memory.swap.max", str(16 * MIB)), ("memory.max", str(16 * MIB)), ("memory.low", str(8 * MIB))]),
    ({"memory": {"limit": -1}}, [("memory.swap.max", "max"), ("memory.max", "max")]),
    ({"memory": {"limit": 0, "swappiness": 10, "disableOOMKiller": True}}, []),
    ({"cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"}},
     [("cpu.weight", "39"), ("cpu.max", "50000 100000"), ("cpuset.cpus", "0-1"), ("cpuset.mems", "0")]),
    ({"cpu": {"quota": -1}}, [("cpu.max", "max")]),
    ({"cpu": {"period": 20000}}, [("cpu.max", "max 20000")]),
    ({"cpu": {"quota": 20000, "burst": 5000, "idle": 1}},
     [("cpu.max", "20000"), ("cpu.max.burst", "5000"), ("cpu.idle", "1")]),
    ({"pids": {"limit": 10}}, [("pids.max", "10")]),
    ({"pids": {"limit": -1}}, [("pids.max", "max")]),
    ({"pids": {"limit": 0}}, []),
    ({"blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 1000}],
                  "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                  "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 0}]}},
     [("io.bfq.weight", "500"), ("io.bfq.weight", "8:0 1000"), ("io.max", "8:0 rbps=1048576"),
      ("io.max", "8:16 wiops=max")]),
    ({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 * MIB}]},
     [("hugetlb.2MB.max", str(4 * MIB)), ("hugetlb.2MB.rsvd.max", str(4 * MIB))]),
    ({"rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}}},
     [("rdma.max", "mlx5_1 hca_handle=3 hca_object=10000")]),
    ({"devices": [{"allow": False, "access": "rwm"}], "network": {"classID": 1}}, []),
    ({"memory": {"limit": 32 * MIB}, "unified": {"memory.max": "max", "cgroup.max.depth": "3"}},
     [("memory.max", str(32 * MIB)), ("memory.max", "max"), ("cgroup.max.depth", "3")]),
]


@pytest.mark.parametrize(("resources", "expected"), V2_TABLE)
def test_v2_plan(resources: dict, expected: list[tuple[str, str]]) -> None:
    assert _files(cgroups.v2_plan(resources)) == expected


def test_v2_plan_alternatives_and_controllers() -> None:
    swap, memory, weight, core = cgroups.v2_plan({"blockIO": {"weight": 500}, "memory": {"limit": 100, "swap": 100},
                                                   "unified": {"cgroup.max.depth": "2"}})
    assert weight == Write("io", (("io.bfq.weight", "500"), ("io.weight", "default 4950")),
                           "linux.resources.blockIO.weight")
    assert swap.choices == (("memory.swap.max", "0"),) and swap.optional
    assert memory.controller == "memory" and core.controller == ""


V1_TABLE = [
    ({"memory": {"limit": 16 * MIB, "swap": 32 * MIB, "reservation": 8 * MIB, "swappiness": 0,
                 "disableOOMKiller": True, "kernelTCP": 4 * MIB, "kernel": 4 * MIB}},
     [("memory.limit_in_bytes", str(16 * MIB)), ("memory.memsw.limit_in_bytes", str(32 * MIB)),
      ("memory.soft_limit_in_bytes", str(8 * MIB)), ("memory.kmem.tcp.limit_in_bytes", str(4 * MIB)),
      ("memory.swappiness", "0"), ("memory.oom_control", "1")]),
    ({"memory": {"limit": -1}}, [("memory.memsw.limit_in_bytes", "-1"), ("memory.limit_in_bytes", "-1")]),
    ({"cpu": {"shares": 512, "quota": 50000, "period": 100000, "realtimePeriod": 1000000,
              "realtimeRuntime": 950000, "cpus": "0"}},
     [("cpu.shares", "512"), ("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "50000"),
      ("cpu.rt_period_us", "1000000"), ("cpu.rt_runtime_us", "950000"), ("cpuset.cpus", "0")]),
    ({"pids": {"limit": 32}}, [("pids.max", "32")]),
    ({"blockIO": {"weight": 300, "leafWeight": 200, "weightDevice": [{"major": 8, "minor": 0, "weight": 400}],
                  "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 4096}]}},
     [("blkio.weight", "300"), ("blkio.leaf_weight", "200"), ("blkio.weight_device", "8:0 400"),
      ("blkio.throttle.write_bps_device", "8:0 4096")]),
    ({"hugepageLimits": [{"pageSize": "1GB", "limit": 0}]},
     [("hugetlb.1GB.limit_in_bytes", "0"), ("hugetlb.1GB.rsvd.limit_in_bytes", "0")]),
    ({"devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3},
                  {"allow": True, "type": "b", "major": 8, "access": "r"}]},
     [("devices.deny", "a *:* rwm"), ("devices.allow", "c 1:3 rwm"), ("devices.allow", "b 8:* r")]),
    ({"network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]}},
     [("net_cls.classid", "1048577"), ("net_prio.ifpriomap", "eth0 5")]),
    ({"unified": {"memory.max": "1"}}, []),           # left to the cgroup2 side
]


@pytest.mark.parametrize(("resources", "expected"), V1_TABLE)
def test_v1_plan(resources: dict, expected: list[tuple[str, str]]) -> None:
    assert _files(cgroups.v1_plan(resources, current_memory_limit=1 << 62)) == expected


@pytest.mark.parametrize(("current", "first"), [(64 * MIB, "memory.limit_in_bytes"),
                                                 (16 * MIB, "memory.memsw.limit_in_bytes"),
                                                 (8 * MIB, "memory.memsw.limit_in_bytes")])
def test_v1_memory_write_order_keeps_limit_under_memsw(current: int, first: str) -> None:
    """Lowering below the current limit writes the limit first; raising writes memory+swap first."""
    plan = cgroups.v1_plan({"memory": {"limit": 16 * MIB, "swap": 16 * MIB}}, current_memory_limit=current)
    assert plan[0].choices[0][0] == first and len(plan) == 2


BAD = [
    ({"memory": {"limit": -5}}, "linux.resources.memory.limit: must be a positive integer or -1"),
    ({"memory": {"limit": "1g"}}, "linux.resources.memory.limit: must be an integer"),
    ({"memory": {"limit": True}}, "linux.resources.memory.limit: must be an integer"),
    ({"memory": {"limit": 100, "swap": 50}}, "linux.resources.memory.swap: must be -1 or at least"),
    ({"memory": {"swappiness": 101}}, "linux.resources.memory.swappiness: must be between 0 and 100"),
    ({"memory": {"disableOOMKiller": "yes"}}, "linux.resources.memory.disableOOMKiller: must be true or false"),
    ({"memory": []}, "linux.resources.memory: must be an object"),
    ({"cpu": {"shares": 1}}, "linux.resources.cpu.shares: must be between 2 and 262144"),
    ({"cpu": {"quota": -2}}, "linux.resources.cpu.quota: must be a positive integer or -1"),
    ({"cpu": {"cpus": 3}}, "linux.resources.cpu.cpus: must be a string"),
    ({"pids": {}}, None),
    ({"pids": {"other": 1}}, "linux.resources.pids.limit: is required"),
    ({"blockIO": {"weight": 5}}, "linux.resources.blockIO.weight: must be between 10 and 1000"),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": 8, "rate": 1}]}},
     "linux.resources.blockIO.throttleReadBpsDevice[0].minor: is required"),
    ({"hugepageLimits": [{"pageSize": "2M", "limit": 1}]}, "linux.resources.hugepageLimits[0].pageSize: must be"),
    ({"hugepageLimits": [{"pageSize": "2MB"}]}, "linux.resources.hugepageLimits[0].limit: is required"),
    ({"devices": [{"allow": True, "type": "x"}]}, "linux.resources.devices[0].type: must be a, b or c"),
    ({"devices": [{"access": "r"}]}, "linux.resources.devices[0].allow: is required"),
    ({"devices": [{"allow": True, "access": "rx"}]}, "linux.resources.devices[0].access: must be made of"),
    ({"devices": {"allow": True}}, "linux.resources.devices: must be a list of objects"),
    ({"rdma": {"mlx": {}}}, "linux.resources.rdma.mlx: give hcaHandles or hcaObjects"),
    ([], "linux.resources: must be an object"),
]


@pytest.mark.parametrize(("resources", "message"), BAD)
@pytest.mark.parametrize("plan", [cgroups.v1_plan, cgroups.v2_plan])
def test_bad_resources_name_the_field(plan, resources, message: str | None) -> None:
    if message is None:
        assert plan(resources) == []
        return
    with pytest.raises(OcitoolError) as caught:
        plan(resources)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(("resources", "message"), [
    ({"cpu": {"realtimeRuntime": 1000}}, "linux.resources.cpu.realtimeRuntime: cgroup v2 has no realtime"),
    ({"unified": {"../memory.max": "1"}}, "linux.resources.unified.../memory.max: not a cgroup file name"),
    ({"unified": {"memory.max": 1}}, "linux.resources.unified.memory.max: must be a string"),
])
def test_v2_only_errors(resources: dict, message: str) -> None:
    with pytest.raises(OcitoolError) as caught:
        cgroups.v2_plan(resources)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(("value", "systemd", "path"), [
    (None, False, "/ocitool/c1"),
    ("", False, "/ocitool/c1"),
    ("/my/runtime/c1", False, "/my/runtime/c1"),
    ("//my/./runtime//c1/", False, "/my/runtime/c1"),
    ("nested/c1", False, "nested/c1"),
    ("system.slice:ocitool:c1", False, "/system.slice/ocitool-c1.scope"),
    ("machine-app.slice:pfx:c1", True, "/machine.slice/machine-app.slice/pfx-c1.scope"),
    (":ocitool:c1", True, "/system.slice/ocitool-c1.scope"),
    ("-.slice::c1", True, "/c1.scope"),
    ("user.slice:x:sub.slice", True, "/user.slice/sub.slice"),
])
def test_cgroups_path(value: str | None, systemd: bool, path: str) -> None:
    assert cgroups.cgroups_path(value, "c1", systemd=systemd) == path


@pytest.mark.parametrize(("value", "systemd", "message"), [
    ("/a/../../etc", False, "linux.cgroupsPath: must not contain '..'"),
    ("/", False, "linux.cgroupsPath: must not be the root cgroup"),
    (7, False, "linux.cgroupsPath: must be a string"),
    ("/plain/path", True, 'linux.cgroupsPath: systemd cgroups need "slice:prefix:name"'),
    ("notaslice:p:c1", True, "linux.cgroupsPath: 'notaslice' is not a systemd slice name"),
])
def test_bad_cgroups_path(value: object, systemd: bool, message: str) -> None:
    with pytest.raises(OcitoolError) as caught:
        cgroups.cgroups_path(value, "c1", systemd=systemd)
    assert str(caught.value).startswith(message)


HYBRID_MOUNTINFO = """\
25 1 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
28 25 0:25 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
29 25 0:26 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
30 1 0:24 / /mnt/memory\\040again rw - cgroup cgroup rw,memory
"""
PURE_MOUNTINFO = """\
25 1 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
40 25 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate
"""
SELF_CGROUP = "3:memory:/box/inner\n2:cpuacct,cpu:/box\n1:name=systemd:/\n0::/box/v2\n"
PROC_CGROUPS = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t1\t1\ncpuacct\t1\t1\t1\nmemory\t2\t1\t1\n"


@pytest.fixture
def fake_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Point the module at made-up /proc files; returns a setter for mountinfo."""
    for name, text in (("_SELF_CGROUP", SELF_CGROUP), ("_PROC_CGROUPS", PROC_CGROUPS)):
        (tmp_path / name).write_text(text)
        monkeypatch.setattr(cgroups, name, str(tmp_path / name))

    def use(mountinfo: str) -> None:
        (tmp_path / "mountinfo").write_text(mountinfo)
        monkeypatch.setattr(cgroups, "_MOUNTINFO", str(tmp_path / "mountinfo"))
    return use


def test_detects_hybrid_v1(fake_host) -> None:
    fake_host(HYBRID_MOUNTINFO)
    manager = cgroup_manager("c1", {"cgroupsPath": "/rt/c1"})
    assert isinstance(manager, V1Manager)
    assert manager.dirs == {"cpu,cpuacct": "/sys/fs/cgroup/cpu,cpuacct/rt/c1", "memory": "/sys/fs/cgroup/memory/rt/c1",
                            "name=systemd": "/sys/fs/cgroup/systemd/rt/c1"}
    assert manager.unified is not None and manager.unified.to_state()["dir"] == "/sys/fs/cgroup/unified/rt/c1"
    relative = cgroup_manager("c1", {"cgroupsPath": "sub/c1"})      # relative to ocitool's own cgroups
    assert relative.dirs["memory"] == "/sys/fs/cgroup/memory/box/inner/sub/c1"
    assert relative.dirs["cpu,cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct/box/sub/c1"
    assert relative.to_state()["unified"]["dir"] == "/sys/fs/cgroup/unified/box/v2/sub/c1"


def test_detects_pure_v2(fake_host) -> None:
    fake_host(PURE_MOUNTINFO)
    manager = cgroup_manager("c1", {})
    assert isinstance(manager, V2Manager)
    assert manager.to_state() == {"version": 2, "path": "/ocitool/c1", "root": ROOT,
                                  "dir": f"{ROOT}/ocitool/c1", "rootless": False}
    assert cgroup_manager("c1", {"cgroupsPath": "x/c1"}).dirs[""] == f"{ROOT}/box/v2/x/c1"


def test_nothing_mounted(fake_host) -> None:
    fake_host("25 1 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n")
    with pytest.raises(OcitoolError, match="no cgroup hierarchy is mounted"):
        cgroup_manager("c1", {})
    assert cgroup_manager("c1", {}, rootless=True).pids() == []


def test_state_round_trip(fake_host) -> None:
    for mountinfo in (HYBRID_MOUNTINFO, PURE_MOUNTINFO):
        fake_host(mountinfo)
        state = cgroup_manager("c1", {"cgroupsPath": "/rt/c1"}).to_state()
        assert json.loads(json.dumps(state)) == state
        assert manager_from_state(state).to_state() == state
    empty = manager_from_state({})
    assert not empty.exists() and empty.pids() == [] and not empty.oom_killed()
    empty.destroy()
    with pytest.raises(OcitoolError, match="state.json: the cgroup record is damaged"):
        manager_from_state({"version": 2, "path": "/x"})


# ---------------------------------------------------------------- real cgroups

@pytest.fixture(scope="session")
def restore_subtree_control() -> Iterator[None]:
    """Tests may enable controllers in the cgroup2 root: turn off afterwards what was off before."""
    control = f"{CGROUP2_ROOT}/cgroup.subtree_control" if CGROUP2_ROOT else None
    before = set(_read(control).split()) if control else set()
    yield
    if control:
        for controller in set(_read(control).split()) - before:
            try:
                Path(control).write_text(f"-{controller}")
            except OSError:
                pass


def _leftovers(relative: str) -> list[str]:
    """Directories at or under ``relative`` in any cgroup hierarchy."""
    found = []
    for mountpoint, _ in MOUNTS:
        top = os.path.join(mountpoint, relative.strip("/"))
        found += [current for current, _, _ in os.walk(top)]
    return found


def _remove(directories: list[str]) -> None:
    for directory in sorted(directories, key=len, reverse=True):
        try:
            os.rmdir(directory)
        except OSError:
            pass


@pytest.fixture
def parent(restore_subtree_control) -> Iterator[str]:
    """A fresh parent cgroup path; afterwards nothing may be left under it in any hierarchy."""
    name = f"/ocitool-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield name
    left = _leftovers(name)
    tops = {os.path.join(mountpoint, name.strip("/")) for mountpoint, _ in MOUNTS}
    _remove(left)
    assert [d for d in left if d not in tops] == [], "cgroups left behind"


def _manager(parent: str, name: str = "c", **resources) -> cgroups.CgroupManager:
    manager = cgroup_manager(name, {"cgroupsPath": f"{parent}/{name}"})
    manager.create()
    if resources:
        manager.apply(resources)
    return manager


def _spawn(manager: cgroups.CgroupManager, *argv: str, **kwargs) -> subprocess.Popen:
    """Start ``argv`` inside the cgroup from its first instruction on."""
    return subprocess.Popen(list(argv), preexec_fn=lambda: manager.add(os.getpid()), **kwargs)


def _memory_limit_file(manager: cgroups.CgroupManager) -> str:
    if isinstance(manager, V2Manager):
        return os.path.join(manager.dirs[""], "memory.max")
    return os.path.join(manager.dirs["memory"], "memory.limit_in_bytes")


def _pids_dir(manager: cgroups.CgroupManager) -> str:
    return manager.dirs[""] if isinstance(manager, V2Manager) else manager.dirs["pids"]


@needs_root
def test_limits_join_list_signal_destroy(parent: str) -> None:
    manager = _manager(parent, memory={"limit": 16 * MIB}, pids={"limit": 10})
    assert manager.exists()
    assert _read(_memory_limit_file(manager)) == str(16 * MIB)
    assert _read(os.path.join(_pids_dir(manager), "pids.max")) == "10"
    child = _spawn(manager, "/bin/busybox", "sleep", "30")
    try:
        assert manager.pids() == [child.pid]
        for directory in manager._all_dirs():          # in every hierarchy
            assert _read(os.path.join(directory, "cgroup.procs")).split() == [str(child.pid)]
        manager.kill_all(signal.SIGTERM)
        assert child.wait(5) == -signal.SIGTERM
        assert not manager.oom_killed()
    finally:
        child.kill()
        child.wait()
    directories = manager._all_dirs()
    manager.destroy()
    assert not manager.exists() and not any(os.path.exists(d) for d in directories)
    manager.destroy()                                   # already gone: no error


@needs_root
def test_destroy_kills_what_is_left_and_works_from_state(parent: str) -> None:
    manager = _manager(parent)
    children = [_spawn(manager, "/bin/busybox", "sleep", "30") for _ in range(3)]
    restored = manager_from_state(json.loads(json.dumps(manager.to_state())))
    assert restored.pids() == sorted(child.pid for child in children)
    restored.destroy()
    assert [child.wait(5) for child in children] == [-signal.SIGKILL] * 3
    assert not manager.exists()


FORK_20 = """
import os, time
made, refused, kids = 0, 0, []
for _ in range(20):
    try:
        pid = os.fork()
    except BlockingIOError:
        refused += 1
        continue
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    kids.append(pid)
print(len(kids), refused, flush=True)
for pid in kids:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
"""


@needs_root
def test_pids_limit_stops_forks(parent: str) -> None:
    manager = _manager(parent, pids={"limit": 10})
    child = _spawn(manager, sys.executable, "-c", FORK_20, stdout=subprocess.PIPE, text=True)
    out, _ = child.communicate(timeout=20)
    assert child.returncode == 0
    assert out.split() == ["9", "11"]          # itself plus 9 children: the 11 others got EAGAIN
    manager.destroy()


@needs_root
def test_out_of_memory_is_killed_and_recorded(parent: str) -> None:
    manager = _manager(parent, memory={"limit": 16 * MIB, "swap": 16 * MIB})
    assert not manager.oom_killed()
    hog = _spawn(manager, "/bin/busybox", "sh", "-c", 'x=$(head -c 67108864 /dev/zero | tr "\\0" a); echo done',
                 stdout=subprocess.PIPE)
    out, _ = hog.communicate(timeout=20)
    assert hog.returncode == -signal.SIGKILL and b"done" not in out
    assert manager.oom_killed()
    manager.destroy()


@needs_root
def test_kernel_refusal_names_field_file_and_value(parent: str) -> None:
    manager = _manager(parent)
    with pytest.raises(OcitoolError) as caught:
        manager.apply({"cpu": {"cpus": "999"}})
    message = str(caught.value)
    assert message.startswith("linux.resources.cpu.cpus: the kernel refused '999' in ")
    assert "/cpuset.cpus: " in message
    manager.destroy()


@needs_root
def test_default_path_is_under_ocitool() -> None:
    container = f"test-{uuid.uuid4().hex[:8]}"
    existed = {mountpoint: os.path.isdir(f"{mountpoint}/ocitool") for mountpoint, _ in MOUNTS}
    manager = cgroup_manager(container, {})
    assert manager.path == f"/ocitool/{container}"
    try:
        manager.create()
        assert all(d.endswith(f"/ocitool/{container}") and os.path.isdir(d) for d in manager._all_dirs())
    finally:
        manager.destroy()
        _remove([f"{mountpoint}/ocitool" for mountpoint, had in existed.items() if not had])
    assert _leftovers(f"/ocitool/{container}") == []


ENTRY = """
import json, os, sys, threading, time
from ocitool.runtime import cgroups
manager = cgroups.cgroup_manager("c", {"cgroupsPath": sys.argv[1] + "/c"})
manager.create()
if sys.argv[2] == "threaded":                       # a second thread: clone3 is not safe, the slow way is taken
    threading.Thread(target=time.sleep, args=(3,), daemon=True).start()
if sys.argv[2] == "no-cpus":                        # a v1 cpuset without CPUs admits no task
    with open(os.path.join(manager._dir_of("cpuset"), "cpuset.cpus"), "w") as file:
        file.write(" ")
entry = cgroups.Entry(manager)
said_r, said_w = os.pipe()
done_r, done_w = os.pipe()
pid = entry.fork()
if pid == 0:
    try:
        entry.join()
        os.write(said_w, b"joined")
        os.read(done_r, 1)                          # stay until the parent has looked
        os._exit(0)
    except BaseException as error:
        os.write(said_w, str(error).encode())
        os._exit(1)
entry.finish(pid)
said = os.read(said_r, 200).decode()
members = {d: open(os.path.join(d, "cgroup.procs")).read().split() for d in manager._all_dirs()}
os.write(done_w, b"x")
_, status = os.waitpid(pid, 0)
manager.destroy()
print(json.dumps({"said": said, "members": members, "pid": pid, "status": status,
                  "born_in_v2": entry.born_in_v2, "v2": manager.v2_dir()}))
"""


def _entry(parent: str, how: str) -> dict:
    result = subprocess.run([sys.executable, "-c", ENTRY, parent, how], capture_output=True, text=True, timeout=20,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@needs_root
@pytest.mark.parametrize("how", ["plain", "threaded"])
def test_entry_brings_the_child_into_every_hierarchy(parent: str, how: str) -> None:
    """Born in the v2 cgroup (clone3) or moved there, and joined to v1 by itself: in all, alone."""
    report = _entry(parent, how)
    assert report["said"] == "joined" and report["status"] == 0
    assert report["members"] and all(pids == [str(report["pid"])] for pids in report["members"].values())
    assert report["born_in_v2"] == (report["v2"] is not None and how == "plain")


@needs_v1
def test_entry_refused_by_a_hierarchy_names_it(parent: str) -> None:
    report = _entry(parent, "no-cpus")
    assert report["status"] == 1 << 8
    assert report["said"].startswith(f"cannot join cgroup {ROOT}/cpuset{parent}/c: No space left on device")


def _rootless_steps(parent: str) -> dict:
    manager = cgroup_manager("c", {"cgroupsPath": f"{parent}/c"}, rootless=True)
    manager.create()
    manager.apply({"memory": {"limit": 16 * MIB}, "pids": {"limit": 5}})
    manager.add(os.getpid())
    manager.destroy()
    return {"state": manager.to_state(), "exists": manager.exists(), "pids": manager.pids()}


@needs_root
def test_rootless_without_writable_cgroups_runs_without_them(parent: str) -> None:
    """As an unprivileged user (no delegated cgroup), every step is a quiet no-op."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:                                        # the child never returns into pytest
        status = 1
        try:
            os.close(reader)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            os.write(writer, json.dumps(_rootless_steps(parent)).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        output = pipe.read()
    assert os.waitpid(pid, 0)[1] == 0
    result = json.loads(output)
    assert result["exists"] is False and result["pids"] == []
    assert result["state"]["rootless"] is True
    assert result["state"].get("dirs", {}) == {} and result["state"].get("dir") is None
    assert (result["state"].get("unified") or {}).get("dir") is None


# ---------------------------------------------------------------- cgroup v1 specifics

@needs_v1
def test_v1_cpu_blkio_memory_files(parent: str) -> None:
    manager = _manager(parent, cpu={"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
                       memory={"limit": 32 * MIB, "swap": 64 * MIB, "reservation": 8 * MIB, "swappiness": 10},
                       blockIO={"weight": 300})
    assert isinstance(manager, V1Manager)
    cpu, cpuset, memory = manager.dirs["cpu"], manager._dir_of("cpuset"), manager.dirs["memory"]
    assert [_read(f"{cpu}/{name}") for name in ("cpu.shares", "cpu.cfs_quota_us", "cpu.cfs_period_us")] == \
        ["512", "50000", "100000"]
    assert (_read(f"{cpuset}/cpuset.cpus"), _read(f"{cpuset}/cpuset.mems")) == ("0", "0")
    assert _read(f"{memory}/memory.memsw.limit_in_bytes") == str(64 * MIB)
    assert _read(f"{memory}/memory.soft_limit_in_bytes") == str(8 * MIB)
    assert _read(f"{memory}/memory.swappiness") == "10"
    blkio = manager.dirs["blkio"]
    weight = next(f for f in ("blkio.weight", "blkio.bfq.weight") if os.path.exists(f"{blkio}/{f}"))
    assert _read(f"{blkio}/{weight}").split()[-1] == "300"
    # raising both above the current memory+swap, then lowering both: each needs its own order
    manager.apply({"memory": {"limit": 128 * MIB, "swap": 128 * MIB}})
    manager.apply({"memory": {"limit": 16 * MIB, "swap": 16 * MIB}})
    assert (_read(f"{memory}/memory.limit_in_bytes"), _read(f"{memory}/memory.memsw.limit_in_bytes")) == \
        (str(16 * MIB), str(16 * MIB))
    manager.apply({"memory": {"limit": -1}})
    assert int(_read(f"{memory}/memory.memsw.limit_in_bytes")) > 1 << 60
    manager.destroy()


@needs_v1
@pytest.mark.skipif(not os.path.exists("/sys/block/vda/dev"), reason="needs a block device vda")
def test_v1_blkio_throttle(parent: str) -> None:
    major, minor = map(int, _read("/sys/block/vda/dev").split(":"))
    manager = _manager(parent, blockIO={"throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}]})
    assert _read(f"{manager.dirs['blkio']}/blkio.throttle.read_bps_device") == f"{major}:{minor} 1048576"
    manager.destroy()


@needs_v1
def test_v1_devices_allow_list(parent: str) -> None:
    manager = _manager(parent, devices=[{"allow": False, "access": "rwm"},
                                        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}])
    assert _read(f"{manager.dirs['devices']}/devices.list") == "c 1:3 rw"
    probe = _spawn(manager, "/bin/busybox", "sh", "-c", "head -c1 /dev/null && echo null-ok; head -c1 /dev/zero",
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = probe.communicate(timeout=10)
    assert "null-ok" in out and "Operation not permitted" in err and probe.returncode != 0
    manager.destroy()


@needs_v1
def test_v1_freeze_and_thaw(parent: str) -> None:
    manager = _manager(parent)
    child = _spawn(manager, "/bin/busybox", "sleep", "30")
    manager.freeze()
    assert manager.frozen() and _read(f"{manager.dirs['freezer']}/freezer.state") == "FROZEN"
    manager.thaw()
    assert not manager.frozen()
    manager.freeze()
    manager.destroy()                                   # a frozen cgroup still goes away
    assert child.wait(5) == -signal.SIGKILL


@needs_v1
def test_v1_missing_controller_is_reported(parent: str) -> None:
    manager = _manager(parent)
    if manager._dir_of("net_cls") is None:
        with pytest.raises(OcitoolError, match=r"^linux\.resources\.network\.classID: the net_cls cgroup controller "
                                               r"is not mounted"):
            manager.apply({"network": {"classID": 1}})
    manager.destroy()


def _cgroup2_controllers() -> list[str]:
    return _read(f"{CGROUP2_ROOT}/cgroup.controllers").split() if CGROUP2_ROOT else []


@needs_v1
@pytest.mark.skipif("hugetlb" not in _cgroup2_controllers(), reason="hugetlb is not a cgroup2 controller here")
def test_hybrid_hands_hugepages_and_unified_to_cgroup2(parent: str) -> None:
    manager = _manager(parent)
    assert isinstance(manager, V1Manager) and manager.unified is not None
    if manager._dir_of("hugetlb") is not None:
        pytest.skip("hugetlb is a v1 hierarchy here")
    manager.apply({"hugepageLimits": [{"pageSize": "2MB", "limit": 8 * MIB}], "unified": {"cgroup.max.depth": "2"},
                   "pids": {"limit": 5}})
    unified = manager.unified.dirs[""]
    assert _read(f"{unified}/hugetlb.2MB.max") == str(8 * MIB)
    assert _read(f"{unified}/cgroup.max.depth") == "2"
    assert _read(f"{manager.dirs['pids']}/pids.max") == "5"
    with pytest.raises(OcitoolError, match=r"^linux\.resources\.hugepageLimits\[0\]: .* has no hugetlb\.3MB\.max"):
        manager.apply({"hugepageLimits": [{"pageSize": "3MB", "limit": 0}]})
    manager.destroy()


# ---------------------------------------------------------------- cgroup v2 in the cgroup2 hierarchy

def _v2(parent: str, name: str = "c") -> V2Manager:
    manager = V2Manager(f"{parent}/{name}", CGROUP2_ROOT, f"{CGROUP2_ROOT}{parent}/{name}")
    manager.create()
    return manager


@needs_cgroup2
def test_v2_manager_lifecycle(parent: str) -> None:
    manager = _v2(parent)
    resources: dict = {"unified": {"cgroup.max.descendants": "3"}}
    if "hugetlb" in _cgroup2_controllers():
        resources["hugepageLimits"] = [{"pageSize": "2MB", "limit": 4 * MIB}]
    manager.apply(resources)
    directory = manager.dirs[""]
    assert _read(f"{directory}/cgroup.max.descendants") == "3"
    if "hugepageLimits" in resources:
        assert "hugetlb" in _read(f"{CGROUP2_ROOT}{parent}/cgroup.subtree_control").split()
        assert "hugetlb" not in _read(f"{directory}/cgroup.subtree_control").split()
        assert _read(f"{directory}/hugetlb.2MB.max") == str(4 * MIB)
    child = _spawn(manager, "/bin/busybox", "sleep", "30")
    assert manager.pids() == [child.pid]
    assert _read(f"{directory}/cgroup.procs") == str(child.pid)
    manager.freeze()
    assert manager.frozen() and _read(f"{directory}/cgroup.freeze") == "1"
    manager.thaw()
    assert not manager.frozen()
    manager.kill_all(signal.SIGKILL)                    # through cgroup.kill
    assert child.wait(5) == -signal.SIGKILL
    assert not manager.oom_killed()
    manager.destroy()
    assert not manager.exists()


@needs_cgroup2
def test_v2_missing_controller_names_field(parent: str) -> None:
    missing = next((c for c in ("memory", "pids", "cpu", "io") if c not in _cgroup2_controllers()), None)
    if missing is None:
        pytest.skip("every controller is available in cgroup2 here")
    resources = {"memory": {"limit": MIB}, "pids": {"limit": 3}, "cpu": {"shares": 100},
                 "blockIO": {"weight": 100}}
    field = {"memory": "memory.limit", "pids": "pids.limit", "cpu": "cpu.shares", "io": "blockIO.weight"}[missing]
    key = field.split(".")[0]
    manager = _v2(parent)
    with pytest.raises(OcitoolError, match=rf"^linux\.resources\.{field}: the cgroup v2 controller '{missing}' "
                                           "is not available in "):
        manager.apply({key: resources[key]})
    manager.destroy()


@needs_cgroup2
@pytest.mark.skipif("hugetlb" not in _cgroup2_controllers() or PURE_V2, reason="needs hugetlb in hybrid cgroup2")
def test_v2_no_internal_processes(parent: str) -> None:
    """A parent cgroup that holds a process cannot hand controllers down: a clear error."""
    middle = _v2(parent, "middle")
    leaf = _v2(f"{parent}/middle", "leaf")
    squatter = _spawn(middle, "/bin/busybox", "sleep", "30")
    try:
        with pytest.raises(OcitoolError, match=r"^linux\.resources\.hugepageLimits\[0\]: cannot enable hugetlb in "
                                               r".*/middle/cgroup\.subtree_control: .*no processes"):
            leaf.apply({"hugepageLimits": [{"pageSize": "2MB", "limit": 0}]})
    finally:
        squatter.kill()
        squatter.wait()
    leaf.destroy()
    middle.destroy()


PRIVATE_V2 = """
import json, os, subprocess, sys
from ocitool.runtime.cgroups import cgroup_manager
manager = cgroup_manager("c", {"cgroupsPath": sys.argv[1] + "/c"})
manager.create()
manager.apply({"unified": {"cgroup.max.depth": "1"}})
child = subprocess.Popen(["/bin/busybox", "sleep", "30"], preexec_fn=lambda: manager.add(os.getpid()))
found = manager.pids() == [child.pid]
state = manager.to_state()
manager.destroy()
print(json.dumps({"type": type(manager).__name__, "state": state, "found": found, "rc": child.wait(),
                  "gone": not manager.exists()}))
"""


@needs_v1
@pytest.mark.skipif(CGROUP2_ROOT is None or shutil.which("unshare") is None, reason="needs cgroup2 and unshare")
def test_v2_chosen_when_cgroup2_is_mounted_on_sys_fs_cgroup(parent: str) -> None:
    """In a private mount namespace, cgroup2 on /sys/fs/cgroup: detection picks V2Manager, which works."""
    script = f'mount -t cgroup2 none {ROOT} && exec "$0" -c "$1" "$2"'
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                             sys.executable, PRIVATE_V2, parent], capture_output=True, text=True, timeout=20,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["type"] == "V2Manager" and report["found"] and report["gone"]
    assert report["rc"] == -signal.SIGKILL
    assert report["state"] == {"version": 2, "path": f"{parent}/c", "root": ROOT, "dir": f"{ROOT}{parent}/c",
                               "rootless": False}
