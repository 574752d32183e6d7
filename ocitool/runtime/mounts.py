"""Preparing a container's root file system inside its new mount namespace.

The container's init calls, in this order (runc's ``rootfs_linux.go``):

1. :func:`prepare_rootfs` while host paths are still visible: cut mount propagation to
   the host, bind the rootfs onto itself, make the config's ``mounts`` in order, then the
   device nodes and ``/dev`` links.
2. :func:`enter_rootfs`: ``pivot_root`` (or ``MS_MOVE`` + ``chroot``) and drop the old root.
3. :func:`finish_rootfs`: sysctls, read-only and masked paths, the root's propagation
   and ``root.readonly``.

Mount targets are resolved inside the rootfs (:mod:`ocitool.securepath`: symlinks and
``..`` cannot leave it), opened, checked to be inside, and mounted on through their
``/proc/self/fd/N`` path, so a symlink swapped in after the check cannot redirect a
mount onto the host (the CVE-2021-30465 race).
"""

from __future__ import annotations

import errno
import os
import stat

from ocitool import securepath
from ocitool.errors import OcitoolError
from ocitool.fsutil import write_in_one_call
from ocitool.runtime import syscalls as sc
from ocitool.runtime.namespaces import parse_namespaces

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from typing import Any

# option -> (MS_* flag, whether the option clears it); the kernel's names, as mount(8).
_FLAG_OPTIONS = {
    "defaults": (0, False),
    "ro": (sc.MS_RDONLY, False), "rw": (sc.MS_RDONLY, True),
    "nosuid": (sc.MS_NOSUID, False), "suid": (sc.MS_NOSUID, True),
    "nodev": (sc.MS_NODEV, False), "dev": (sc.MS_NODEV, True),
    "noexec": (sc.MS_NOEXEC, False), "exec": (sc.MS_NOEXEC, True),
    "sync": (sc.MS_SYNCHRONOUS, False), "async": (sc.MS_SYNCHRONOUS, True),
    "dirsync": (sc.MS_DIRSYNC, False),
    "mand": (sc.MS_MANDLOCK, False), "nomand": (sc.MS_MANDLOCK, True),
    "remount": (sc.MS_REMOUNT, False),
    "bind": (sc.MS_BIND, False), "rbind": (sc.MS_BIND | sc.MS_REC, False),
    "noatime": (sc.MS_NOATIME, False), "atime": (sc.MS_NOATIME, True),
    "nodiratime": (sc.MS_NODIRATIME, False), "diratime": (sc.MS_NODIRATIME, True),
    "relatime": (sc.MS_RELATIME, False), "norelatime": (sc.MS_RELATIME, True),
    "strictatime": (sc.MS_STRICTATIME, False), "nostrictatime": (sc.MS_STRICTATIME, True),
    "lazytime": (sc.MS_LAZYTIME, False), "nolazytime": (sc.MS_LAZYTIME, True),
    "nosymfollow": (sc.MS_NOSYMFOLLOW, False), "symfollow": (sc.MS_NOSYMFOLLOW, True),
    "silent": (sc.MS_SILENT, False), "loud": (sc.MS_SILENT, True),
}
_PROPAGATION_OPTIONS = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
# Recursive options (runc's "rro" & co.), applied to the whole tree with mount_setattr:
# option -> (MOUNT_ATTR_* to set, MOUNT_ATTR_* to clear).
_RECURSIVE_OPTIONS = {
    "rro": (sc.MOUNT_ATTR_RDONLY, 0), "rrw": (0, sc.MOUNT_ATTR_RDONLY),
    "rnosuid": (sc.MOUNT_ATTR_NOSUID, 0), "rsuid": (0, sc.MOUNT_ATTR_NOSUID),
    "rnodev": (sc.MOUNT_ATTR_NODEV, 0), "rdev": (0, sc.MOUNT_ATTR_NODEV),
    "rnoexec": (sc.MOUNT_ATTR_NOEXEC, 0), "rexec": (0, sc.MOUNT_ATTR_NOEXEC),
    "rnodiratime": (sc.MOUNT_ATTR_NODIRATIME, 0), "rdiratime": (0, sc.MOUNT_ATTR_NODIRATIME),
    "rnosymfollow": (sc.MOUNT_ATTR_NOSYMFOLLOW, 0), "rsymfollow": (0, sc.MOUNT_ATTR_NOSYMFOLLOW),
    "rrelatime": (0, sc.MOUNT_ATTR__ATIME),
    "rnoatime": (sc.MOUNT_ATTR_NOATIME, sc.MOUNT_ATTR__ATIME),
    "rstrictatime": (sc.MOUNT_ATTR_STRICTATIME, sc.MOUNT_ATTR__ATIME),
}
# Flags a bound host tree gets on every mount in it -> their mount_setattr attribute.
_TREE_ATTRIBUTES = {sc.MS_RDONLY: sc.MOUNT_ATTR_RDONLY, sc.MS_NOSUID: sc.MOUNT_ATTR_NOSUID,
                    sc.MS_NODEV: sc.MOUNT_ATTR_NODEV, sc.MS_NOEXEC: sc.MOUNT_ATTR_NOEXEC}
# The option names the runtime interprets itself (runc's "features" lists them); any other
# option is passed on to the file system as mount data.
MOUNT_OPTIONS = frozenset(_FLAG_OPTIONS) | frozenset(_PROPAGATION_OPTIONS) | frozenset(_RECURSIVE_OPTIONS)
# A mount's current flags (statvfs f_flag) -> the MS_* flags that keep them on a remount.
_KEPT_FLAGS = {
    os.ST_NOSUID: sc.MS_NOSUID, os.ST_NODEV: sc.MS_NODEV, os.ST_NOEXEC: sc.MS_NOEXEC,
    os.ST_NOATIME: sc.MS_NOATIME, os.ST_NODIRATIME: sc.MS_NODIRATIME, os.ST_RELATIME: sc.MS_RELATIME,
}
_ROOT_PROPAGATION = ("shared", "rshared", "slave", "rslave", "private", "rprivate", "unbindable", "runbindable")
# What an unprivileged (user namespace) container binds from the host when the kernel
# refuses it a fresh instance of the file system.
_HOST_TREES = {"sysfs": "/sys", "cgroup": "/sys/fs/cgroup"}
# The only places below /proc a mount may cover (what lxcfs emulates), as runc allows.
_PROC_FILES = frozenset(f"proc/{name}" for name in (
    "cpuinfo", "diskstats", "meminfo", "stat", "swaps", "uptime", "loadavg", "slabinfo",
    "net/dev", "sys/kernel/ns_last_pid"))
_IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                          "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"})


class MountError(OcitoolError):
    """The kernel refused a mount the config asks for."""


class Device:
    """A device node to create in the container (a ``linux.devices`` entry)."""

    __slots__ = ("path", "type", "major", "minor", "mode", "uid", "gid")

    def __init__(self, path: str, type: str, major: int, minor: int, mode: int = 0o666, uid: int = 0,
                 gid: int = 0) -> None:
        self.path = path
        self.type = type  # c, u (unbuffered char), b or p (fifo)
        self.major = major
        self.minor = minor
        self.mode = mode
        self.uid = uid
        self.gid = gid


# What every container gets when its /dev is a fresh tmpfs (runtime-spec "Default Devices").
DEFAULT_DEVICES = (
    Device("/dev/null", "c", 1, 3), Device("/dev/zero", "c", 1, 5), Device("/dev/full", "c", 1, 7),
    Device("/dev/random", "c", 1, 8), Device("/dev/urandom", "c", 1, 9), Device("/dev/tty", "c", 5, 0),
)
_DEV_LINKS = (("/dev/fd", "/proc/self/fd"), ("/dev/stdin", "/proc/self/fd/0"),
              ("/dev/stdout", "/proc/self/fd/1"), ("/dev/stderr", "/proc/self/fd/2"))
_DEVICE_TYPES = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


class _Options:
    """A mount's ``options``, sorted into what each system call takes."""

    __slots__ = ("flags", "propagation", "attr_set", "attr_clr", "data")

    def __init__(self, flags: int = 0, propagation: list[int] | None = None, attr_set: int = 0, attr_clr: int = 0,
                 data: list[str] | None = None) -> None:
        self.flags = flags  # MS_* for mount(2)
        self.propagation: list[int] = [] if propagation is None else propagation  # one mount(2) each
        self.attr_set = attr_set  # MOUNT_ATTR_* for mount_setattr(2)
        self.attr_clr = attr_clr
        self.data: list[str] = [] if data is None else data  # the file system's own options

    def with_flags(self, flags: int) -> _Options:
        """A copy with ``flags`` in place of these."""
        return _Options(flags, self.propagation, self.attr_set, self.attr_clr, self.data)


class _Mount:
    """A checked ``mounts`` entry."""

    __slots__ = ("where", "destination", "type", "source", "options")

    def __init__(self, where: str, destination: str, type: str, source: str, options: _Options) -> None:
        self.where = where  # "mounts[3]", for messages
        self.destination = destination
        self.type = type
        self.source = source
        self.options = options

    @property
    def bind(self) -> bool:
        return self.type == "bind" or bool(self.options.flags & sc.MS_BIND)

    def with_flags(self, flags: int) -> _Mount:
        """A copy whose options have ``flags`` in place of these."""
        return _Mount(self.where, self.destination, self.type, self.source, self.options.with_flags(flags))


class _Target:
    """A mount point opened inside the rootfs; a ``with`` block closes it."""

    __slots__ = ("fd", "proc")

    def __init__(self, fd: int) -> None:
        self.fd = fd  # O_PATH descriptor of the mount point
        self.proc = f"/proc/self/fd/{fd}"  # what to hand to mount(2)

    def __enter__(self) -> _Target:
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.close(self.fd)


def prepare_rootfs(spec: dict[str, Any], bundle: str | os.PathLike[str]) -> None:
    """Set up the rootfs in this (new) mount namespace, before :func:`enter_rootfs`.

    Makes the whole tree a slave of the host's (private with ``rootfsPropagation``
    private), so nothing mounted from here on reaches the host; binds the rootfs onto
    itself so ``pivot_root`` can use it; makes ``mounts`` in order; creates
    ``linux.devices``, and when ``/dev`` is a tmpfs also the default devices and links.
    The config's mounts, devices and sysctls are checked before the first mount.
    """
    linux = spec.get("linux") or {}
    rootfs = _rootfs(spec, bundle)
    mounts = [_parse_mount(entry, f"mounts[{index}]") for index, entry in enumerate(spec.get("mounts") or [])]
    devices = [_parse_device(entry, f"linux.devices[{index}]")
               for index, entry in enumerate(linux.get("devices") or [])]
    validate_sysctl(linux)
    private = _root_propagation(linux) in ("private", "rprivate")
    _mount_or_fail("linux.rootfsPropagation", None, "/", "/", None,
                   sc.MS_REC | (sc.MS_PRIVATE if private else sc.MS_SLAVE))
    _mount_or_fail("root.path", rootfs, rootfs, rootfs, None, sc.MS_BIND | sc.MS_REC)
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _make_mounts(root_fd, bundle, mounts, devices)
    finally:
        os.close(root_fd)


def _rootfs(spec: dict[str, Any], bundle: str | os.PathLike[str]) -> str:
    rootfs = os.path.realpath(os.path.join(bundle, spec["root"]["path"]))
    if not os.path.isdir(rootfs):
        raise OcitoolError(f"root.path: {rootfs} is not a directory")
    return rootfs


def _root_propagation(linux: dict[str, Any]) -> str:
    value = linux.get("rootfsPropagation") or ""
    if value and value not in _ROOT_PROPAGATION:
        raise OcitoolError(f"linux.rootfsPropagation: {value!r} is not one of {', '.join(_ROOT_PROPAGATION)}")
    return value


def _make_mounts(root_fd: int, bundle: str | os.PathLike[str], mounts: list[_Mount], devices: list[Device]) -> None:
    dev = next((m for m in mounts if _clean(m.destination) == "/dev" and m.type == "tmpfs" and not m.bind), None)
    for mount in mounts:
        _mount(root_fd, bundle, _without_rdonly(mount) if mount is dev else mount)
    wanted = [(f"linux.devices[{index}]", device) for index, device in enumerate(devices)]
    if dev is not None:
        configured = {_clean(device.path) for device in devices}
        wanted[:0] = [(f"default device {d.path}", d) for d in DEFAULT_DEVICES if d.path not in configured]
    for where, device in wanted:
        _make_device(root_fd, device, where)
    if dev is not None:
        _link_dev(root_fd)
        if dev.options.flags & sc.MS_RDONLY:  # filled while writable, now as the config asks
            _remount(root_fd, dev, dev.options.flags)


def _without_rdonly(mount: _Mount) -> _Mount:
    return mount.with_flags(mount.options.flags & ~sc.MS_RDONLY)


# --- parsing -------------------------------------------------------------------------------

def _parse_mount(entry: Any, where: str) -> _Mount:
    if not isinstance(entry, dict):
        raise OcitoolError(f"{where}: must be an object")
    destination = entry.get("destination")
    if not isinstance(destination, str) or not destination.startswith("/"):
        raise OcitoolError(f"{where}.destination: must be absolute")
    for key in ("type", "source"):
        if not isinstance(entry.get(key, ""), str):
            raise OcitoolError(f"{where}.{key}: must be a string")
    options = entry.get("options") or []
    if not isinstance(options, list):
        raise OcitoolError(f"{where}.options: must be a list of strings")
    mount = _Mount(where, destination, entry.get("type") or "", entry.get("source") or "",
                   _parse_options(options, f"{where}.options"))
    if mount.bind and not mount.source:
        raise OcitoolError(f"{where}.source: a bind mount needs a source")
    if not mount.bind and not mount.type:
        raise OcitoolError(f"{where}.type: must be given unless the mount is a bind mount")
    return mount


def _parse_options(options: list[Any], where: str) -> _Options:
    """Sort options into mount flags, propagation changes, recursive attributes and data."""
    parsed = _Options()
    for index, option in enumerate(options):
        if not isinstance(option, str):
            raise OcitoolError(f"{where}[{index}]: must be a string")
        if option in _FLAG_OPTIONS:
            flag, clear = _FLAG_OPTIONS[option]
            parsed.flags = parsed.flags & ~flag if clear else parsed.flags | flag
        elif option in _PROPAGATION_OPTIONS:
            parsed.propagation.append(_PROPAGATION_OPTIONS[option])
        elif option in _RECURSIVE_OPTIONS:
            attr_set, attr_clr = _RECURSIVE_OPTIONS[option]
            parsed.attr_set = parsed.attr_set & ~attr_clr | attr_set
            parsed.attr_clr = parsed.attr_clr & ~attr_set | attr_clr
        else:
            parsed.data.append(option)
    return parsed


def _parse_device(entry: Any, where: str) -> Device:
    if not isinstance(entry, dict):
        raise OcitoolError(f"{where}: must be an object")
    path, kind = entry.get("path"), entry.get("type")
    if not isinstance(path, str) or not path.startswith("/"):
        raise OcitoolError(f"{where}.path: must be an absolute path")
    if kind not in _DEVICE_TYPES:
        raise OcitoolError(f"{where}.type: {kind!r} is not one of c, b, u, p")
    numbers = {}
    for key, default in (("major", 0 if kind == "p" else None), ("minor", 0 if kind == "p" else None),
                         ("fileMode", 0o666), ("uid", 0), ("gid", 0)):
        value = entry.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise OcitoolError(f"{where}.{key}: must be a non-negative integer")
        numbers[key] = value
    return Device(path, kind, numbers["major"], numbers["minor"], numbers["fileMode"] & 0o7777,
                  numbers["uid"], numbers["gid"])


def _clean(path: str) -> str:
    """``path`` with empty and "." components dropped (".." is left to in-root resolution)."""
    return "/" + "/".join(part for part in path.split("/") if part not in ("", "."))


# --- mounting ------------------------------------------------------------------------------

def _mount(root_fd: int, bundle: str | os.PathLike[str], mount: _Mount) -> None:
    if mount.bind:
        _bind(root_fd, bundle, mount)
    elif mount.type == "cgroup" and not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        # cgroup v1: runc assembles a tmpfs of per-controller binds; we bind the host's
        # hierarchy (read-only when asked, all the way down) instead.
        _bind_host_tree(root_fd, mount, _HOST_TREES["cgroup"])
    else:
        _mount_filesystem(root_fd, mount)
    for flag in mount.options.propagation:
        with _target(root_fd, mount) as target:
            _mount_or_fail(mount.where, None, target.proc, mount.destination, None, flag)
    if mount.options.attr_set or mount.options.attr_clr:
        _set_attributes(root_fd, mount, mount.options.attr_set, mount.options.attr_clr)


def _bind(root_fd: int, bundle: str | os.PathLike[str], mount: _Mount) -> None:
    """Bind ``source`` (relative: to the bundle) and remount it if flags beyond bind remain."""
    source = os.path.join(bundle, mount.source)
    try:
        is_dir = stat.S_ISDIR(os.stat(source).st_mode)
    except OSError as exc:
        raise OcitoolError(f"{mount.where}.source: cannot bind-mount {source}: {exc.strerror}") from None
    flags = mount.options.flags | sc.MS_BIND
    with _target(root_fd, mount, "dir" if is_dir else "file") as target:
        _mount_or_fail(mount.where, source, target.proc, mount.destination, None, flags & (sc.MS_BIND | sc.MS_REC))
    if flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT):
        _remount(root_fd, mount, flags)


def _mount_filesystem(root_fd: int, mount: _Mount) -> None:
    """Mount a fresh instance of ``mount.type``; in a user namespace fall back to the host's."""
    fstype = "cgroup2" if mount.type == "cgroup" else mount.type
    with _target(root_fd, mount, "dir") as target:
        try:
            sc.mount(mount.source or fstype, target.proc, fstype, mount.options.flags,
                     ",".join(mount.options.data) or None)
            return
        except OSError as exc:
            if exc.errno != errno.EPERM or mount.type not in _HOST_TREES or not _in_user_namespace():
                raise _refused(mount.where, mount.source or fstype, mount.destination, exc) from None
    _bind_host_tree(root_fd, mount, _HOST_TREES[mount.type])


def _bind_host_tree(root_fd: int, mount: _Mount, host_path: str) -> None:
    """Bind the host's ``host_path`` with its submounts, each given the mount's flags."""
    with _target(root_fd, mount, "dir") as target:
        _mount_or_fail(mount.where, host_path, target.proc, mount.destination, None, sc.MS_BIND | sc.MS_REC)
    attributes = sum(attr for flag, attr in _TREE_ATTRIBUTES.items() if mount.options.flags & flag)
    if attributes:
        _set_attributes(root_fd, mount, attributes, 0)


def _set_attributes(root_fd: int, mount: _Mount, attr_set: int, attr_clr: int) -> None:
    with _target(root_fd, mount) as target:
        try:
            sc.mount_setattr(target.fd, "", sc.AT_EMPTY_PATH | sc.AT_RECURSIVE, attr_set, attr_clr)
        except OSError as exc:
            raise _refused(mount.where, mount.source or mount.type, mount.destination, exc) from None


def _remount(root_fd: int, mount: _Mount, flags: int) -> None:
    """Apply ``flags`` to the mount now at the destination (binds ignore them at first).

    In a user namespace the kernel refuses to drop flags it locked (nosuid, nodev, noexec,
    atime) with EPERM; then the mount's current ones are kept, as runc does.
    """
    remount = flags & ~sc.MS_REC | sc.MS_REMOUNT
    with _target(root_fd, mount) as target:
        try:
            sc.mount(None, target.proc, None, remount)
        except OSError as exc:
            if exc.errno != errno.EPERM:
                raise _refused(mount.where, mount.source or mount.type, mount.destination, exc) from None
            _mount_or_fail(mount.where, None, target.proc, mount.destination, None,
                           remount | _kept_flags(os.fstatvfs(target.fd)))


def _kept_flags(status: os.statvfs_result) -> int:
    return sum(flag for st_flag, flag in _KEPT_FLAGS.items() if status.f_flag & st_flag)


def _check_proc_target(mount: _Mount, path: str) -> None:
    """Only procfs may cover /proc, and only lxcfs-style files below it (runc's checkProcMount)."""
    if path == "proc" and (mount.type != "proc" or mount.bind):
        raise OcitoolError(f"{mount.where}.destination: only a proc file system may be mounted on /proc")
    if path.startswith("proc/") and path not in _PROC_FILES:
        allowed = ", ".join(f"/{name}" for name in sorted(_PROC_FILES))
        raise OcitoolError(f"{mount.where}.destination: {mount.destination} is inside /proc, where a mount could "
                           f"hide its security settings; only {allowed} may be covered")


def _in_user_namespace() -> bool:
    """True unless this process sees the initial user namespace's full id map."""
    with open("/proc/self/uid_map", encoding="ascii") as handle:
        return handle.read().split() != ["0", "0", "4294967295"]


def _mount_or_fail(where: str, source: str | None, target: str, shown: str, fstype: str | None,
                   flags: int, data: str | None = None) -> None:
    try:
        sc.mount(source, target, fstype, flags, data)
    except OSError as exc:
        raise _refused(where, source or fstype or "", shown, exc) from None


def _reason(exc: OSError | ValueError) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _refused(where: str, source: str, target: str, exc: OSError) -> MountError:
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return MountError(f"{where}: cannot mount {source or 'none'} on {target}: {name} ({os.strerror(exc.errno or 0)})")


# --- targets inside the rootfs -------------------------------------------------------------

def _target(root_fd: int, mount: _Mount, create: str | None = None) -> _Target:
    """Open ``mount.destination`` inside the rootfs, creating it (a "dir" or "file") if missing.

    Creating means mounting there is about to happen, so that is when /proc is guarded.
    """
    try:
        fd = _open_in_root(root_fd, mount.destination, create)
    except (OSError, ValueError) as exc:
        raise OcitoolError(f"{mount.where}.destination: cannot use {mount.destination} "
                           f"in the rootfs: {_reason(exc)}") from None
    try:
        try:
            path = securepath.path_in_root(root_fd, fd)
        except ValueError:
            raise OcitoolError(f"{mount.where}.destination: {mount.destination} moved outside the rootfs "
                               f"(now {os.readlink(f'/proc/self/fd/{fd}')})") from None
        if create is not None:
            _check_proc_target(mount, path)
    except BaseException:
        os.close(fd)
        raise
    return _Target(fd)


def _open_in_root(root_fd: int, path: str, create: str | None, links: int = 0) -> int:
    """An ``O_PATH`` fd of ``path`` resolved inside the root, creating what is missing.

    Missing components become directories (the last one a ``create`` "dir" or "file");
    a dangling symlink on the way is followed inside the root, and what it points to is
    created there.
    """
    try:
        return securepath.open_in_root(root_fd, path, os.O_PATH)
    except FileNotFoundError:
        if create is None:
            raise
    parts = [part for part in path.split("/") if part not in ("", ".")]
    for depth in range(1, len(parts) + 1):
        prefix = "/".join(parts[:depth])
        try:
            os.close(securepath.open_in_root(root_fd, prefix, os.O_PATH))
            continue
        except FileNotFoundError:
            pass
        parent, name = securepath.open_parent_in_root(root_fd, prefix)
        try:
            link = _readlink(parent, name)
            if link is not None:
                if links >= 40:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                rest = os.path.join("/" + securepath.path_in_root(root_fd, parent), link, *parts[depth:])
                return _open_in_root(root_fd, rest, create, links + 1)
            _create(parent, name, create if depth == len(parts) else "dir")
        finally:
            os.close(parent)
    return securepath.open_in_root(root_fd, path, os.O_PATH)


def _readlink(dir_fd: int, name: str) -> str | None:
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOENT):  # not a symlink, or not there
            return None
        raise


def _create(dir_fd: int, name: str, kind: str | None) -> None:
    try:
        if kind == "file":
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                             dir_fd=dir_fd))
        else:
            os.mkdir(name, 0o755, dir_fd=dir_fd)
    except FileExistsError:
        pass


# --- /dev ----------------------------------------------------------------------------------

def _make_device(root_fd: int, device: Device, where: str) -> None:
    """Create ``device`` with mknod, or bind the host's node where mknod is not allowed."""
    try:
        parent, name = securepath.open_parent_in_root(root_fd, device.path, create_missing_dirs=True)
    except (OSError, ValueError) as exc:
        raise OcitoolError(f"{where}.path: cannot create {device.path}: {_reason(exc)}") from None
    try:
        if _existing_device(parent, name, device, where):
            return
        try:
            _mknod(parent, name, device)
        except PermissionError:  # no CAP_MKNOD for devices (a user namespace)
            _bind_device(parent, name, device, where)
        except OSError as exc:
            raise OcitoolError(f"{where}: cannot create {device.path}: {exc.strerror}") from None
    finally:
        os.close(parent)


def _existing_device(dir_fd: int, name: str, device: Device, where: str) -> bool:
    """True if ``name`` already is ``device``; an error if something else is there."""
    try:
        status = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    wanted = _DEVICE_TYPES[device.type]
    same = stat.S_IFMT(status.st_mode) == wanted and (
        wanted == stat.S_IFIFO or status.st_rdev == os.makedev(device.major, device.minor))
    if not same:
        raise OcitoolError(f"{where}.path: {device.path} already exists and is not the requested device")
    return True


def _mknod(dir_fd: int, name: str, device: Device) -> None:
    umask = os.umask(0)  # fileMode exactly
    try:
        os.mknod(name, _DEVICE_TYPES[device.type] | device.mode, os.makedev(device.major, device.minor),
                 dir_fd=dir_fd)
    finally:
        os.umask(umask)
    os.chown(name, device.uid, device.gid, dir_fd=dir_fd, follow_symlinks=False)


def _bind_device(dir_fd: int, name: str, device: Device, where: str) -> None:
    """Bind the host's node at the same path over an empty file (never chown it: it is the host's)."""
    os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd))
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        _mount_or_fail(where, device.path, f"/proc/self/fd/{fd}", device.path, None, sc.MS_BIND)
    finally:
        os.close(fd)


def _link_dev(root_fd: int) -> None:
    """/dev/fd, stdin, stdout, stderr, and /dev/ptmx pointing at the devpts instance's."""
    for path, target in _DEV_LINKS:
        _symlink(root_fd, path, target, replace_existing=False)
    _symlink(root_fd, "/dev/ptmx", "pts/ptmx", replace_existing=True)


def _symlink(root_fd: int, path: str, target: str, replace_existing: bool) -> None:
    parent, name = securepath.open_parent_in_root(root_fd, path, create_missing_dirs=True)
    try:
        if replace_existing:
            try:
                os.unlink(name, dir_fd=parent)
            except FileNotFoundError:
                pass
        try:
            os.symlink(target, name, dir_fd=parent)
        except FileExistsError:
            pass
    finally:
        os.close(parent)


# --- entering ------------------------------------------------------------------------------

def enter_rootfs(rootfs: str | os.PathLike[str], no_pivot: bool) -> None:
    """Make ``rootfs`` (prepared by :func:`prepare_rootfs`) this process's ``/`` and cd there.

    ``pivot_root(".", ".")`` stacks the old root on top of the new one; it is made a
    slave (so its unmount cannot propagate anywhere) and lazily unmounted, as runc does.
    ``no_pivot`` moves the rootfs over ``/`` and chroots instead, for file systems that
    cannot pivot (a ramdisk root); the host's mounts then stay underneath, reachable by a
    process able to escape a chroot.
    """
    new_root = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new_root)
        if no_pivot:
            _mount_or_fail("--no-pivot", os.fspath(rootfs), "/", "/", None, sc.MS_MOVE)
            os.chroot(".")
        else:
            _pivot(os.fspath(rootfs))
    finally:
        os.close(new_root)
    os.chdir("/")


def _pivot(rootfs: str) -> None:
    old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            sc.pivot_root(".", ".")
        except OSError as exc:
            raise _refused("root.path", "pivot_root", rootfs, exc) from None
        os.fchdir(old_root)
        _mount_or_fail("root.path", None, ".", "the old root", None, sc.MS_SLAVE | sc.MS_REC)
        sc.umount2(".", sc.MNT_DETACH)
    finally:
        os.close(old_root)


# --- after entering ------------------------------------------------------------------------

def finish_rootfs(spec: dict[str, Any]) -> None:
    """Inside the new root: sysctls, read-only paths, masked paths, propagation, ``root.readonly``.

    Runs after :func:`enter_rootfs`, so plain paths cannot leave the container any more.
    """
    linux = spec.get("linux") or {}
    for key, value in (linux.get("sysctl") or {}).items():
        _write_sysctl(key, value)
    for index, path in enumerate(linux.get("readonlyPaths") or []):
        _readonly_path(_absolute(path, f"linux.readonlyPaths[{index}]"), f"linux.readonlyPaths[{index}]")
    for index, path in enumerate(linux.get("maskedPaths") or []):
        _mask_path(_absolute(path, f"linux.maskedPaths[{index}]"), f"linux.maskedPaths[{index}]")
    propagation = _root_propagation(linux)
    if propagation.lstrip("r") in ("shared", "unbindable"):
        _mount_or_fail("linux.rootfsPropagation", None, "/", "/", None, _PROPAGATION_OPTIONS[propagation])
    if (spec.get("root") or {}).get("readonly"):
        _remount_readonly("/", "root.readonly")


def _absolute(path: Any, where: str) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise OcitoolError(f"{where}: must be an absolute path")
    return path


def _readonly_path(path: str, where: str) -> None:
    """Bind ``path`` onto itself and make that read-only; a missing path is skipped."""
    try:
        sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _refused(where, path, path, exc) from None
    _remount_readonly(path, where)


def _remount_readonly(path: str, where: str) -> None:
    """Remount the mount at ``path`` read-only, keeping its nosuid, nodev, noexec and atime flags."""
    flags = sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | _kept_flags(os.statvfs(path))
    _mount_or_fail(where, None, path, path, None, flags)


def _mask_path(path: str, where: str) -> None:
    """Hide ``path``: /dev/null over a file, an empty read-only tmpfs over a directory."""
    try:
        is_dir = stat.S_ISDIR(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    if is_dir:
        _mount_or_fail(where, "tmpfs", path, path, "tmpfs", sc.MS_RDONLY)
    else:
        _mount_or_fail(where, "/dev/null", path, path, None, sc.MS_BIND)


# --- sysctl --------------------------------------------------------------------------------

def validate_sysctl(linux: dict[str, Any]) -> None:
    """Refuse ``linux.sysctl`` keys that would change the host, as runc does.

    /proc/sys is only partly namespaced: IPC keys need an ipc namespace, ``net.*`` a
    network namespace, ``kernel.domainname`` a uts one (``kernel.hostname`` conflicts with
    the ``hostname`` field); anything else is the host's.
    """
    sysctl = linux.get("sysctl") or {}
    if not isinstance(sysctl, dict):
        raise OcitoolError("linux.sysctl: must be an object of strings")
    if not sysctl:
        return
    kinds = {namespace.type for namespace in parse_namespaces(linux)}
    for key, value in sysctl.items():
        where = f"linux.sysctl[{key!r}]"
        if not isinstance(value, str):
            raise OcitoolError(f"{where}: the value must be a string")
        _sysctl_file(key)
        dotted = _dotted(key)
        if dotted in _IPC_SYSCTLS or dotted.startswith("fs.mqueue."):
            needed = "ipc"
        elif dotted.startswith("net."):
            needed = "network"
        elif dotted == "kernel.domainname" and "uts" in kinds:
            continue
        elif dotted == "kernel.hostname" and "uts" in kinds:
            raise OcitoolError(f"{where}: conflicts with the hostname field; set that instead")
        else:
            raise OcitoolError(f"{where}: is not in a separate kernel namespace (it would change the host)")
        if needed not in kinds:
            raise OcitoolError(f"{where}: needs a {needed} namespace in linux.namespaces")


def _dotted(key: str) -> str:
    """``key`` in dotted form: sysctl(8) also accepts "/" as the separator (then "." is literal)."""
    first = next((char for char in key if char in "./"), ".")
    return key if first == "." else key.translate(str.maketrans("./", "/."))


def _sysctl_file(key: str) -> str:
    """The file under /proc/sys for ``key``, refusing keys that would climb out of it."""
    parts = [part.replace("/", ".") for part in _dotted(key).split(".")]
    if any(part in ("", ".", "..") for part in parts):
        raise OcitoolError(f"linux.sysctl[{key!r}]: not a valid sysctl name")
    return "/proc/sys/" + "/".join(parts)


def _write_sysctl(key: str, value: str) -> None:
    path = _sysctl_file(key)
    try:
        write_in_one_call(path, value)
    except OSError as exc:
        raise OcitoolError(f"linux.sysctl[{key!r}]: cannot write {value!r} to {path}: {exc.strerror}") from None
