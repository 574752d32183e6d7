"""ctypes wrappers for the Linux system calls the ``os`` module lacks.

Each wrapper raises ``OSError`` with the errno and the call's name, like ``os`` does.
Constants are the kernel's (include/uapi/linux/sched.h, mount.h, prctl.h).
"""

from __future__ import annotations

import ctypes
import os
import _signal  # the C module: signal.py builds enums at import

# glibc by its soname: find_library would run ldconfig, costing milliseconds on every start.
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc_holding_gil = ctypes.PyDLL("libc.so.6", use_errno=True)  # for calls no other thread may interleave
_libc_holding_gil.syscall.restype = ctypes.c_long

# clone/unshare namespace flags
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
MS_LAZYTIME = 0x2000000

MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

# prctl options
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYSCALL_NUMBERS = {
    "x86_64": {"pivot_root": 155, "setns": 308, "close_range": 436, "capget": 125, "capset": 126, "seccomp": 317},
    "aarch64": {"pivot_root": 41, "setns": 268, "close_range": 436, "capget": 90, "capset": 91, "seccomp": 277},
}


def _check(result: int, name: str) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return result


def syscall_number(name: str) -> int:
    """This architecture's number for a syscall libc may not wrap."""
    machine = os.uname().machine  # what platform.machine() reads, without importing platform
    try:
        return _SYSCALL_NUMBERS[machine][name]
    except KeyError:
        raise OSError(38, f"{name}: unsupported architecture {machine}") from None


def raw_syscall(name: str, *args: int | bytes | ctypes.c_void_p) -> int:
    """Call ``syscall(2)`` for ``name`` with integer or pointer arguments."""
    _libc.syscall.restype = ctypes.c_long
    return _check(_libc.syscall(ctypes.c_long(syscall_number(name)), *args), name)


def unshare(flags: int) -> None:
    """Move this process into new namespaces (``unshare(2)``)."""
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace ``fd`` refers to (``setns(2)``)."""
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    """``mount(2)``; the error names the target."""
    def enc(value: str | None) -> bytes | None:
        return value.encode() if value is not None else None

    result = _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    _check(result, f"mount {source or fstype or ''} on {target}")


def umount2(target: str, flags: int = 0) -> None:
    """``umount2(2)``."""
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    """``pivot_root(2)`` (glibc has no wrapper)."""
    raw_syscall("pivot_root", new_root.encode(), put_old.encode())


def sethostname(name: str) -> None:
    """Set the UTS namespace's hostname."""
    data = name.encode()
    _check(_libc.sethostname(data, ctypes.c_size_t(len(data))), "sethostname")


def setdomainname(name: str) -> None:
    """Set the UTS namespace's NIS domain name."""
    data = name.encode()
    _check(_libc.setdomainname(data, ctypes.c_size_t(len(data))), "setdomainname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """``prctl(2)`` with integer arguments."""
    _libc.prctl.restype = ctypes.c_int
    return _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                              ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)), "prctl")


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    """``close_range(2)``; ``flags=CLOSE_RANGE_CLOEXEC`` marks instead of closing."""
    raw_syscall("close_range", ctypes.c_uint(first), ctypes.c_uint(last), ctypes.c_uint(flags))


CLOSE_RANGE_CLOEXEC = 1 << 2

# capget/capset (include/uapi/linux/capability.h): version 3 uses two 32-bit data structs.
LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capget(pid: int = 0) -> tuple[int, int, int]:
    """The (effective, permitted, inheritable) masks of ``pid`` (0: this thread)."""
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    raw_syscall("capget", ctypes.byref(header), ctypes.byref(data))

    def mask(field: str) -> int:
        return getattr(data[0], field) | getattr(data[1], field) << 32

    return mask("effective"), mask("permitted"), mask("inheritable")


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's effective, permitted and inheritable masks (``capset(2)``)."""
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for half in range(2):
        shift = 32 * half
        data[half] = _CapData((effective >> shift) & 0xFFFFFFFF, (permitted >> shift) & 0xFFFFFFFF,
                              (inheritable >> shift) & 0xFFFFFFFF)
    raw_syscall("capset", ctypes.byref(header), ctypes.byref(data))


# mount_setattr(2) (include/uapi/linux/mount.h): change the attributes of a mount tree at once.
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70  # the access-time field: RELATIME (0), NOATIME or STRICTATIME
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_NOSYMFOLLOW = 0x200000
_SYSCALL_NUMBERS["x86_64"]["mount_setattr"] = 442  # the same number on every architecture
_SYSCALL_NUMBERS["aarch64"]["mount_setattr"] = 442


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int, attr_clr: int = 0) -> None:
    """``mount_setattr(2)``: set ``attr_set`` and clear ``attr_clr`` (``MOUNT_ATTR_*``) on a mount.

    With ``AT_RECURSIVE`` in ``flags`` every mount below it changes too; with
    ``AT_EMPTY_PATH`` and ``path=""`` the mount is the one ``dirfd`` refers to.
    """
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    raw_syscall("mount_setattr", ctypes.c_int(dirfd), path.encode(), ctypes.c_uint(flags),
                ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))


# clone3(2) (include/uapi/linux/sched.h): fork straight into a cgroup v2 directory.
CLONE_INTO_CGROUP = 0x200000000
_SYSCALL_NUMBERS["x86_64"]["clone3"] = 435  # the same number on every architecture
_SYSCALL_NUMBERS["aarch64"]["clone3"] = 435


class _CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("flags", "pidfd", "child_tid", "parent_tid", "exit_signal",
                                                      "stack", "stack_size", "tls", "set_tid", "set_tid_size",
                                                      "cgroup")]


def fork_into_cgroup(cgroup_fd: int) -> int:
    """``os.fork()`` whose child starts in the cgroup v2 directory ``cgroup_fd``; 0 in the child.

    Being born there spares the move into it, which as a write to ``cgroup.procs`` waits for an
    RCU grace period. Python's fork bookkeeping runs around the call as ``os.fork`` does it, and
    the call holds the GIL throughout. Only for a single-threaded process: unlike glibc's
    fork(), the raw call cannot make other threads' locks safe for the child.
    """
    args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=_signal.SIGCHLD, cgroup=cgroup_fd)
    python = ctypes.pythonapi
    python.PyOS_BeforeFork()
    pid = _libc_holding_gil.syscall(ctypes.c_long(syscall_number("clone3")), ctypes.byref(args),
                                    ctypes.c_size_t(ctypes.sizeof(args)))
    if pid == 0:
        python.PyOS_AfterFork_Child()
        return 0
    error = ctypes.get_errno()
    python.PyOS_AfterFork_Parent()
    if pid == -1:
        raise OSError(error, f"clone3: {os.strerror(error)}")
    return pid
