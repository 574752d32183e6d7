"""Rootfs preparation: mounts, /dev, masked and read-only paths, sysctl, pivot_root.

Every test does its work in a forked child that first unshares a mount namespace (and
whatever else it needs), so neither the pytest process nor the host ever changes; the
child sends its result (or exception) back over a pipe. An autouse fixture checks that
the host's mount table gained nothing.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ocitool.bundle.spec import default_spec
from ocitool.errors import OcitoolError
from ocitool.runtime import mounts, syscalls
from ocitool.runtime.mounts import MountError, enter_rootfs, finish_rootfs, prepare_rootfs, validate_sysctl
from support.bundles import make_rootfs
from support.fork import in_child

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("busybox"), reason="needs root and busybox")

NEWNS = syscalls.CLONE_NEWNS
PROC = {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}
DEV = {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755"]}
PTS = {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
       "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}


def mountinfo() -> dict[str, dict[str, Any]]:
    """This process's mounts by mount point (the topmost one wins)."""
    table = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ")
        fields = left.split()
        fstype, source, super_options = right.split()
        table[fields[4]] = {"options": set(fields[5].split(",")), "optional": fields[6:], "fstype": fstype,
                            "source": source, "super": set(super_options.split(","))}
    return table


@pytest.fixture(autouse=True)
def host_mounts_unchanged() -> Iterator[None]:
    """Fail if the test left any new mount in the host's (the pytest process's) mount table."""
    before = set(Path("/proc/self/mountinfo").read_text().splitlines())
    yield
    added = set(Path("/proc/self/mountinfo").read_text().splitlines()) - before
    assert not added, f"mounts leaked to the host: {added}"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    make_rootfs(tmp_path / "bundle" / "rootfs")
    return tmp_path / "bundle"


def make_spec(mounts_: list[dict[str, Any]], readonly: bool = False, proc: bool = True,
              **linux: Any) -> dict[str, Any]:
    """A config with ``mounts_`` (after a /proc mount for the probes, unless not ``proc``)."""
    linux.setdefault("namespaces", [{"type": "mount"}])
    return {"root": {"path": "rootfs", "readonly": readonly}, "mounts": [PROC] * proc + mounts_, "linux": linux}


def contain_here(bundle: Path, spec: dict[str, Any], probe: Callable[[], Any] = lambda: None,
                 no_pivot: bool = False) -> Any:
    """Prepare, enter and finish the rootfs in this (child) process, then return ``probe()``."""
    prepare_rootfs(spec, bundle)
    enter_rootfs((bundle / "rootfs").resolve(), no_pivot)
    finish_rootfs(spec)
    return probe()


def contain(bundle: Path, spec: dict[str, Any], probe: Callable[[], Any] = lambda: None,
            unshare: int = NEWNS, no_pivot: bool = False) -> Any:
    """:func:`contain_here` in a child with new namespaces (``unshare``)."""
    return in_child(lambda: contain_here(bundle, spec, probe, no_pivot), unshare)


def write_error(path: str) -> int | None:
    """The errno of creating ``path``, or None if that worked."""
    try:
        Path(path).write_text("x")
    except OSError as exc:
        return exc.errno
    return None


# --- mount types and options ---------------------------------------------------------------

def test_default_mounts_types_and_flags(bundle: Path) -> None:
    extra = [
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "noexec", "noatime", "mode=700", "size=1m"]},
        {"destination": "/run/deep/er", "type": "tmpfs", "source": "tmpfs",
         "options": ["ro", "strictatime", "nodiratime", "sync"]},
    ]
    spec = make_spec(default_spec()["mounts"] + extra, proc=False,
                     namespaces=[{"type": "mount"}, {"type": "ipc"}, {"type": "network"}])
    table = contain(bundle, spec, lambda: (mountinfo(), sorted(os.listdir("/"))),
                    NEWNS | syscalls.CLONE_NEWIPC | syscalls.CLONE_NEWNET)[0]

    assert table["/proc"]["fstype"] == "proc"
    assert table["/dev"]["fstype"] == "tmpfs" and "nosuid" in table["/dev"]["options"]
    assert {"mode=755", "size=65536k"} <= table["/dev"]["super"]
    assert table["/dev/pts"]["fstype"] == "devpts" and {"nosuid", "noexec"} <= table["/dev/pts"]["options"]
    assert {"ptmxmode=666", "mode=620", "gid=5"} <= table["/dev/pts"]["super"]
    assert table["/dev/shm"]["fstype"] == "tmpfs" and {"nosuid", "nodev", "noexec"} <= table["/dev/shm"]["options"]
    assert table["/dev/mqueue"]["fstype"] == "mqueue"
    assert table["/sys"]["fstype"] == "sysfs" and "ro" in table["/sys"]["options"]
    assert {"nosuid", "noexec", "nodev", "noatime"} <= table["/tmp"]["options"]
    assert {"mode=700", "size=1024k"} <= table["/tmp"]["super"]
    run = table["/run/deep/er"]
    assert {"ro", "nodiratime"} <= run["options"] and "relatime" not in run["options"] and "sync" in run["super"]
    cgroups = {point: info for point, info in table.items() if point.startswith("/sys/fs/cgroup")}
    assert cgroups and all("ro" in info["options"] for info in cgroups.values())
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        assert cgroups["/sys/fs/cgroup"]["fstype"] == "cgroup2"
    else:  # v1: the host's hierarchy, bound read-only with every controller below it
        assert any(info["fstype"] == "cgroup" for info in cgroups.values())
    assert not [point for point in table if point.startswith(("/work", "/mnt/", "/home"))], "old root still mounted"


def test_bind_mounts_ro_rw_file_relative_and_recursive(bundle: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "file.txt").write_text("hello")
    (bundle / "volume").mkdir()
    spec = make_spec([
        {"destination": "/ro", "type": "bind", "source": str(data), "options": ["rbind", "ro", "nosuid"]},
        {"destination": "/rw", "source": str(data), "options": ["bind", "noexec"]},
        {"destination": "/etc/one.txt", "type": "none", "source": str(data / "file.txt"), "options": ["bind", "ro"]},
        {"destination": "/relative", "type": "bind", "source": "volume", "options": ["rbind"]},
        {"destination": "/recursive", "type": "bind", "source": str(data), "options": ["rbind", "rro"]},
        {"destination": "/plain", "type": "bind", "source": str(data), "options": ["bind"]},
    ])

    def probe() -> dict[str, Any]:
        table = mountinfo()
        return {"table": table, "ro": write_error("/ro/new"), "rw": write_error("/rw/new"),
                "file": Path("/etc/one.txt").read_text(), "file_write": write_error("/etc/one.txt"),
                "relative": write_error("/relative/made-inside"),
                "recursive_sub": write_error("/recursive/sub/x"), "plain_sub": "/plain/sub" in table}

    def mount_sub_then_contain() -> dict[str, Any]:
        syscalls.mount("tmpfs", str(data / "sub"), "tmpfs")  # only in this child's namespace
        return contain_here(bundle, spec, probe)

    result = in_child(mount_sub_then_contain, NEWNS)
    table = result["table"]
    assert result["ro"] == errno.EROFS and {"ro", "nosuid"} <= table["/ro"]["options"]
    assert table["/ro/sub"]["fstype"] == "tmpfs"  # rbind took the submount along
    assert "ro" not in table["/ro/sub"]["options"]  # plain "ro" is not recursive
    assert result["rw"] is None and "noexec" in table["/rw"]["options"]
    assert (data / "new").read_text() == "x"
    assert result["file"] == "hello" and result["file_write"] == errno.EROFS
    assert result["relative"] is None and (bundle / "volume" / "made-inside").exists()
    assert result["recursive_sub"] == errno.EROFS and "ro" in table["/recursive/sub"]["options"]
    assert not result["plain_sub"]  # "bind" alone leaves submounts behind


@pytest.mark.parametrize(("option", "expected"), [("rshared", "shared:"), ("unbindable", "unbindable"),
                                                 ("private", None), ("rslave", None)])
def test_per_mount_propagation(bundle: Path, option: str, expected: str | None) -> None:
    spec = make_spec([{"destination": "/p", "type": "tmpfs", "source": "tmpfs", "options": [option]}])
    optional = contain(bundle, spec, lambda: mountinfo()["/p"]["optional"])
    if expected is None:
        assert not [tag for tag in optional if tag.startswith(("shared:", "unbindable"))]
    else:
        assert any(tag.startswith(expected) for tag in optional), optional


# --- /dev ----------------------------------------------------------------------------------

def probe_dev() -> dict[str, Any]:
    with open("/dev/null", "wb") as null:
        null.write(b"discarded")
    with open("/dev/zero", "rb") as zero:
        zeros = zero.read(4)
    try:
        with open("/dev/full", "wb", buffering=0) as full:
            full.write(b"x")
        full_error = None
    except OSError as exc:
        full_error = exc.errno
    with open("/dev/urandom", "rb") as urandom:
        random_bytes = len(urandom.read(8))
    master, slave = os.openpty()
    pty = os.ttyname(slave)
    os.close(master)
    os.close(slave)
    nodes = {}
    for name in ("tty", "random", "mydev", "sub/blk", "fifo"):
        status = os.stat(f"/dev/{name}")
        nodes[name] = (stat.S_IFMT(status.st_mode), stat.S_IMODE(status.st_mode), status.st_uid, status.st_gid,
                       os.major(status.st_rdev), os.minor(status.st_rdev))
    links = {name: os.readlink(f"/dev/{name}") for name in ("ptmx", "fd", "stdin", "stdout", "stderr")}
    return {"zeros": zeros, "full": full_error, "random": random_bytes, "pty": pty, "nodes": nodes,
            "links": links, "table": mountinfo()}


DEVICES = [
    {"path": "/dev/mydev", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640, "uid": 1000, "gid": 1001},
    {"path": "/dev/sub/blk", "type": "b", "major": 7, "minor": 0, "fileMode": 0o600},
    {"path": "/dev/fifo", "type": "p", "fileMode": 0o620},
]


def test_tmpfs_dev_gets_default_devices_links_pts_and_linux_devices(bundle: Path) -> None:
    spec = make_spec([DEV, PTS], devices=DEVICES)
    result = contain(bundle, spec, probe_dev)
    assert result["zeros"] == b"\0" * 4 and result["full"] == errno.ENOSPC and result["random"] == 8
    assert result["pty"].startswith("/dev/pts/")
    nodes = result["nodes"]
    assert nodes["tty"] == (stat.S_IFCHR, 0o666, 0, 0, 5, 0)
    assert nodes["random"] == (stat.S_IFCHR, 0o666, 0, 0, 1, 8)
    assert nodes["mydev"] == (stat.S_IFCHR, 0o640, 1000, 1001, 1, 3)
    assert nodes["sub/blk"] == (stat.S_IFBLK, 0o600, 0, 0, 7, 0)
    assert nodes["fifo"][:2] == (stat.S_IFIFO, 0o620)
    assert result["links"] == {"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
                               "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}
    assert result["table"]["/dev/pts"]["fstype"] == "devpts"


def test_readonly_dev_is_filled_first(bundle: Path) -> None:
    spec = make_spec([{**DEV, "options": [*DEV["options"], "ro"]}])
    table, error = contain(bundle, spec, lambda: (mountinfo(), write_error("/dev/new")))
    assert "ro" in table["/dev"]["options"] and error == errno.EROFS
    assert contain(bundle, spec, lambda: Path("/dev/null").write_bytes(b"ok")) == 2


def test_existing_file_that_is_not_the_device_is_refused(bundle: Path) -> None:
    (bundle / "rootfs" / "etc" / "notadevice").write_text("")
    spec = make_spec([], devices=[{"path": "/etc/notadevice", "type": "c", "major": 1, "minor": 3}])
    with pytest.raises(OcitoolError, match=r"linux\.devices\[0\]\.path: /etc/notadevice already exists"):
        contain(bundle, spec)


def map_own_ids() -> None:
    """In a fresh user namespace: map root to our own (host root) ids, as ``unshare -r`` does."""
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text("0 0 1")
    Path("/proc/self/gid_map").write_text("0 0 1")


def test_user_namespace_binds_host_device_nodes(bundle: Path) -> None:
    own = [{"containerID": 0, "hostID": 0, "size": 1}]
    spec = make_spec([DEV], proc=False, namespaces=[{"type": "mount"}, {"type": "user"}], uidMappings=own,
                     gidMappings=own)

    def work() -> dict[str, Any]:
        map_own_ids()
        syscalls.unshare(NEWNS)  # owned by the new user namespace: mknod of devices is refused here
        return contain_here(bundle, spec, lambda: {
            "null": Path("/dev/null").write_bytes(b"x"), "zero": Path("/dev/zero").open("rb").read(2),
            "bound": os.stat("/dev/null").st_dev != os.stat("/dev").st_dev})

    result = in_child(work, syscalls.CLONE_NEWUSER)
    assert result == {"null": 1, "zero": b"\0\0", "bound": True}  # the host's node, bound onto the tmpfs


# --- masked and read-only paths, root.readonly, sysctl --------------------------------------

def test_masked_and_readonly_paths(bundle: Path) -> None:
    (bundle / "rootfs" / "etc" / "secret").write_text("top secret")
    spec = make_spec([DEV, {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                                  "options": ["nosuid", "noexec", "nodev"]}],
                     maskedPaths=["/proc/timer_list", "/sys/firmware", "/etc/secret", "/no/such/path"],
                     readonlyPaths=["/proc/sys", "/etc", "/missing"])

    def probe() -> dict[str, Any]:
        return {"timer_list": Path("/proc/timer_list").read_bytes(), "firmware": os.listdir("/sys/firmware"),
                "firmware_write": write_error("/sys/firmware/x"), "secret": Path("/etc/secret").read_text(),
                "etc_write": write_error("/etc/new"), "proc_sys": write_error("/proc/sys/kernel/hostname"),
                "table": mountinfo()}

    result = contain(bundle, spec, probe, NEWNS | syscalls.CLONE_NEWUTS)
    assert result["timer_list"] == b"" and result["secret"] == ""
    assert result["firmware"] == [] and result["firmware_write"] == errno.EROFS
    assert result["etc_write"] == errno.EROFS and result["proc_sys"] == errno.EROFS
    assert {"ro", "nosuid", "noexec", "nodev"} <= result["table"]["/proc/sys"]["options"]  # flags kept


def test_root_readonly_keeps_other_mounts_writable(bundle: Path) -> None:
    spec = make_spec([{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}], readonly=True)
    table, root_error, tmp_error = contain(bundle, spec, lambda: (mountinfo(), write_error("/x"),
                                                                   write_error("/tmp/x")))
    assert "ro" in table["/"]["options"] and root_error == errno.EROFS and tmp_error is None


def test_sysctl_in_ipc_and_network_namespaces(bundle: Path) -> None:
    host = {key: Path(f"/proc/sys/{key}").read_text() for key in ("kernel/shmmax", "net/ipv4/ip_forward")}
    forward = "0" if host["net/ipv4/ip_forward"].strip() == "1" else "1"
    spec = make_spec([], namespaces=[{"type": "mount"}, {"type": "ipc"}, {"type": "network"}],
                     sysctl={"kernel.shmmax": "123456789", "net/ipv4/ip_forward": forward},
                     readonlyPaths=["/proc/sys"])
    values = contain(bundle, spec, lambda: [Path(f"/proc/sys/{key}").read_text().strip() for key in host],
                     NEWNS | syscalls.CLONE_NEWIPC | syscalls.CLONE_NEWNET)
    assert values == ["123456789", forward]
    assert {key: Path(f"/proc/sys/{key}").read_text() for key in host} == host


@pytest.mark.parametrize(("namespaces", "sysctl", "message"), [
    (["mount"], {"net.ipv4.ip_forward": "1"}, r"needs a network namespace"),
    (["mount", "network"], {"kernel.shmmax": "1"}, r"needs a ipc namespace"),
    (["mount"], {"fs.mqueue.msg_max": "1"}, r"needs a ipc namespace"),
    (["mount", "uts"], {"kernel.hostname": "x"}, r"conflicts with the hostname field"),
    (["mount", "uts", "ipc", "network"], {"fs.file-max": "1"}, r"not in a separate kernel namespace"),
    (["mount", "network"], {"net/../../kernel/x": "1"}, r"not a valid sysctl name"),
    (["mount", "ipc"], {"kernel.shmmax": 1}, r"must be a string"),
])
def test_sysctl_validation(namespaces: list[str], sysctl: dict[str, Any], message: str) -> None:
    linux = {"namespaces": [{"type": kind} for kind in namespaces], "sysctl": sysctl}
    with pytest.raises(OcitoolError, match=r"linux\.sysctl\[.*\]: .*" + message):
        validate_sysctl(linux)


def test_sysctl_accepted_in_the_right_namespaces() -> None:
    validate_sysctl({"namespaces": [{"type": "uts"}, {"type": "ipc"}, {"type": "network"}],
                     "sysctl": {"kernel.domainname": "d", "kernel.msgmax": "1", "fs.mqueue.queues_max": "1",
                                "net.core.somaxconn": "1"}})


# --- staying inside the rootfs -------------------------------------------------------------

@pytest.mark.parametrize("link", ["/", "bait"])
def test_symlink_to_host_cannot_redirect_mounts(bundle: Path, tmp_path: Path, link: str) -> None:
    bait = tmp_path / "bait"
    bait.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    target = "/" if link == "/" else str(bait)
    (bundle / "rootfs" / "mnt").symlink_to(target)
    escape = f"/ocitool-escape-{uuid.uuid4().hex}"
    spec = make_spec([{"destination": "/mnt/x", "type": "tmpfs", "source": "tmpfs"},
                      {"destination": "/mnt/y/z", "type": "bind", "source": str(data), "options": ["rbind"]},
                      {"destination": f"/mnt{escape}", "type": "tmpfs", "source": "tmpfs"}])
    table = contain(bundle, spec, mountinfo)
    inside = bundle / "rootfs" / target.lstrip("/")
    assert table[os.path.join(target, "x")]["fstype"] == "tmpfs"
    assert (inside / "x").is_dir() and (inside / "y" / "z").is_dir() and (inside / escape.lstrip("/")).is_dir()
    assert list(bait.iterdir()) == [] and not Path(escape).exists()


def test_dangling_symlink_destination_is_created_inside(bundle: Path) -> None:
    escape = f"/ocitool-escape-{uuid.uuid4().hex}"
    (bundle / "rootfs" / "etc" / "hosts").symlink_to(f"{escape}/hosts")
    source = bundle / "hosts"
    source.write_text("127.0.0.1 inside\n")
    spec = make_spec([{"destination": "/etc/hosts", "type": "bind", "source": str(source), "options": ["bind"]}])
    assert contain(bundle, spec, lambda: Path("/etc/hosts").read_text()) == "127.0.0.1 inside\n"
    assert (bundle / "rootfs" / escape.lstrip("/") / "hosts").is_file() and not Path(escape).exists()


def test_dotdot_in_destination_stays_inside(bundle: Path) -> None:
    name = f"ocitool-escape-{uuid.uuid4().hex}"
    spec = make_spec([{"destination": f"/../../../../tmp/{name}", "type": "tmpfs", "source": "tmpfs"},
                      {"destination": f"/etc/../../../{name}", "type": "tmpfs", "source": "tmpfs"}])
    table = contain(bundle, spec, mountinfo)
    assert table[f"/tmp/{name}"]["fstype"] == "tmpfs" and table[f"/{name}"]["fstype"] == "tmpfs"
    assert not Path(f"/tmp/{name}").exists() and not Path(f"/{name}").exists()


def test_symlink_loop_in_destination_is_refused(bundle: Path) -> None:
    (bundle / "rootfs" / "loop").symlink_to("loop")
    spec = make_spec([{"destination": "/loop/x", "type": "tmpfs", "source": "tmpfs"}])
    with pytest.raises(OcitoolError, match=r"mounts\[1\]\.destination: cannot use /loop/x in the rootfs: Too many"):
        contain(bundle, spec)


@pytest.mark.parametrize(("mount", "message"), [
    ({"destination": "/proc", "type": "tmpfs", "source": "tmpfs"}, r"only a proc file system may be mounted on /proc"),
    ({"destination": "/proc/self/attr", "type": "tmpfs", "source": "tmpfs"}, r"/proc/self/attr is inside /proc"),
    ({"destination": "/proc", "type": "cgroup", "source": "cgroup"}, r"only a proc file system may be mounted"),
    ({"destination": "/proc/sys", "type": "bind", "source": "/tmp"}, r"/proc/sys is inside /proc"),
])
def test_mounts_over_proc_are_limited(bundle: Path, mount: dict[str, Any], message: str) -> None:
    with pytest.raises(OcitoolError, match=r"mounts\[1\]\.destination: " + message):
        contain(bundle, make_spec([mount]))


# --- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize(("mount", "message"), [
    ({"destination": "data", "type": "tmpfs"}, r"mounts\[0\]\.destination: must be absolute"),
    ({"destination": "/x", "type": "tmpfs", "options": "ro"}, r"mounts\[0\]\.options: must be a list"),
    ({"destination": "/x", "type": "tmpfs", "options": ["ro", 1]}, r"mounts\[0\]\.options\[1\]: must be a string"),
    ({"destination": "/x", "options": ["bind"]}, r"mounts\[0\]\.source: a bind mount needs a source"),
    ({"destination": "/x"}, r"mounts\[0\]\.type: must be given"),
    ({"destination": "/x", "type": "bind", "source": "/no/such/source"},
     r"mounts\[0\]\.source: cannot bind-mount /no/such/source: No such file or directory"),
])
def test_bad_mounts_name_the_field(bundle: Path, mount: dict[str, Any], message: str) -> None:
    with pytest.raises(OcitoolError, match=message):
        contain(bundle, make_spec([mount], proc=False))


def test_refused_mount_names_source_target_and_errno(bundle: Path) -> None:
    spec = make_spec([{"destination": "/x", "type": "nosuchfs", "source": "thing"}], proc=False)
    with pytest.raises(MountError, match=r"mounts\[0\]: cannot mount thing on /x: ENODEV \(No such device\)"):
        contain(bundle, spec)


def test_bad_linux_fields_name_the_field(bundle: Path) -> None:
    cases = [
        ({"rootfsPropagation": "sideways"}, r"linux\.rootfsPropagation: 'sideways' is not one of"),
        ({"devices": [{"path": "dev/x", "type": "c", "major": 1, "minor": 1}]}, r"linux\.devices\[0\]\.path"),
        ({"devices": [{"path": "/dev/x", "type": "q", "major": 1, "minor": 1}]}, r"linux\.devices\[0\]\.type"),
        ({"devices": [{"path": "/dev/x", "type": "c", "minor": 1}]}, r"linux\.devices\[0\]\.major"),
        ({"maskedPaths": ["relative"]}, r"linux\.maskedPaths\[0\]: must be an absolute path"),
    ]
    for linux, message in cases:
        with pytest.raises(OcitoolError, match=message):
            contain(bundle, make_spec([], proc=False, **linux))


def test_missing_rootfs(tmp_path: Path) -> None:
    with pytest.raises(OcitoolError, match=r"root\.path: .* is not a directory"):
        in_child(lambda: prepare_rootfs(make_spec([]), tmp_path), NEWNS)


# --- entering and propagation --------------------------------------------------------------

def test_no_pivot_moves_and_chroots(bundle: Path) -> None:
    spec = make_spec([{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}])
    listing, table = contain(bundle, spec, lambda: (sorted(os.listdir("/")), mountinfo()), no_pivot=True)
    assert listing == sorted(os.listdir(bundle / "rootfs"))
    assert table["/tmp"]["fstype"] == "tmpfs" and table["/proc"]["fstype"] == "proc"


def test_busybox_runs_in_the_new_root(bundle: Path) -> None:
    def probe() -> tuple[int, str]:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.dup2(write_fd, 1)
                os.execv("/bin/sh", ["sh", "-c", "ls /dev; cat /proc/self/mountinfo | wc -l"])
            finally:
                os._exit(127)
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            output = pipe.read()
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), output

    code, output = contain(bundle, make_spec([DEV, PTS]), probe)
    assert code == 0 and {"null", "zero", "pts", "ptmx"} <= set(output.split())


@pytest.mark.parametrize("propagation", [None, "shared", "private", "unbindable"])
def test_container_mounts_never_propagate_to_the_host(tmp_path: Path, propagation: str | None) -> None:
    """A child plays the host, with its rootfs and a volume on a *shared* mount; the container's
    namespace is a copy of it, so only the runtime's propagation settings keep mounts from leaking."""
    host_root = tmp_path / "host"
    host_root.mkdir()
    linux = {"rootfsPropagation": propagation} if propagation else {}
    spec = make_spec([{"destination": "/vol", "type": "bind", "source": str(host_root / "vol"), "options": ["rbind"]},
                      {"destination": "/vol/inner", "type": "tmpfs", "source": "tmpfs"},
                      {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}], **linux)

    def host() -> tuple[list[str], list[str]]:
        syscalls.mount("tmpfs", str(host_root), "tmpfs")
        syscalls.mount(None, str(host_root), None, syscalls.MS_SHARED)
        make_rootfs(host_root / "bundle" / "rootfs")
        (host_root / "vol").mkdir()
        before = sorted(point for point in mountinfo() if point.startswith(str(host_root)))
        inside = contain(host_root / "bundle", spec, lambda: mountinfo()["/"]["optional"])
        after = sorted(point for point in mountinfo() if point.startswith(str(host_root)))
        assert after == before, f"leaked into the host: {set(after) - set(before)}"
        return inside, os.listdir(host_root / "vol")

    optional, volume = in_child(host, NEWNS)
    assert volume == ["inner"]  # the mount point was made, on the host's volume, but not the mount
    if propagation == "shared":
        assert any(tag.startswith("shared:") for tag in optional)
    if propagation == "unbindable":
        assert "unbindable" in optional


def test_options_parsing_sorts_flags_propagation_recursive_and_data() -> None:
    parsed = mounts._parse_options(["ro", "rw", "nosuid", "rbind", "rslave", "rro", "rrw", "mode=755",
                                    "size=1m", "strictatime", "nostrictatime", "noatime"], "mounts[0].options")
    assert parsed.flags == syscalls.MS_NOSUID | syscalls.MS_BIND | syscalls.MS_REC | syscalls.MS_NOATIME
    assert parsed.propagation == [syscalls.MS_SLAVE | syscalls.MS_REC]
    assert (parsed.attr_set, parsed.attr_clr) == (0, syscalls.MOUNT_ATTR_RDONLY)
    assert parsed.data == ["mode=755", "size=1m"]
    assert {"ro", "rbind", "rslave", "rro", "nosymfollow"} <= mounts.MOUNT_OPTIONS
    assert "mode=755" not in mounts.MOUNT_OPTIONS

