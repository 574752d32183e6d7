"""Open paths inside a root directory without ever leaving it.

Container root filesystems are full of symlinks that are absolute (``/lib -> /usr/lib``)
or climb with ``..``. Opened naively relative to the rootfs on the host, such a link
leads outside it. Here every path is resolved *as if the root directory were /*:
symlinks are followed but interpreted inside the root, ``..`` stops at the root, and
procfs magic links are refused.

The kernel does this itself with ``openat2(2)`` and ``RESOLVE_IN_ROOT`` (Linux 5.6+).
Where that syscall is missing (ENOSYS, or a seccomp filter saying EPERM), a userspace
walk applies the same rules one component at a time, opening each with ``O_NOFOLLOW``
relative to the directory reached so far.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat

from ocitool.once import once

_SYS_OPENAT2 = 437  # the same number on every architecture Linux added it for
_AT_FDCWD = -100
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_MAX_SYMLINKS = 40  # the kernel's limit (MAXSYMLINKS)
_MAX_RETRIES = 64  # EAGAIN: a concurrent rename or mount raced with ".." resolution
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]


def open_in_root(root_fd: int, path: str, flags: int, mode: int = 0o777) -> int:
    """Open ``path`` relative to the directory ``root_fd``, treating that directory as ``/``.

    ``flags`` and ``mode`` are those of ``os.open``; ``O_NOFOLLOW`` applies to the last
    component only, as with ``openat``. Errors are the usual ``OSError`` subclasses.
    """
    path = path or "."
    if openat2_available():
        return _openat2(root_fd, path, flags, mode)
    return _open_userspace(root_fd, path, flags, mode)


def open_parent_in_root(root_fd: int, path: str, create_missing_dirs: bool = False) -> tuple[int, str]:
    """Open the directory holding the entry ``path`` and return ``(dir_fd, basename)``.

    The last component is not resolved, so the caller can act on it with ``dir_fd=`` and
    no-follow calls (create, replace or remove a symlink rather than its target). With
    ``create_missing_dirs``, missing parent directories are made (mode 0755), each one
    created in, and opened without following links from, the directory above it; a
    dangling symlink on the way gets its target made, inside the root.
    ``dir_fd`` is an ``O_PATH`` descriptor: use it as a ``dir_fd``, then close it.
    """
    parts = _components(path)
    if not parts or parts[-1] == "..":
        raise ValueError(f"{path!r} does not name an entry inside a directory")
    parent = "/".join(parts[:-1])
    try:
        return open_in_root(root_fd, parent, _DIR_FLAGS), parts[-1]
    except FileNotFoundError:
        if not create_missing_dirs:
            raise
    return _make_dirs(root_fd, parts[:-1]), parts[-1]


def path_in_root(root_fd: int, fd: int) -> str:
    """Where the open file ``fd`` is, relative to ``root_fd`` and free of symlinks (``""`` for the root).

    Read from ``/proc/self/fd``; raises ``ValueError`` if ``fd`` is not inside the root.
    """
    root = os.readlink(f"/proc/self/fd/{root_fd}")
    where = os.readlink(f"/proc/self/fd/{fd}")
    if where == root:
        return ""
    prefix = root.rstrip("/") + "/"
    if not where.startswith(prefix):
        raise ValueError(f"{where!r} is not inside {root!r}")
    return where[len(prefix):]


@once
def openat2_available() -> bool:
    """True when the kernel (and any seccomp filter) lets us call ``openat2(2)``."""
    how = _OpenHow(os.O_PATH | os.O_CLOEXEC, 0, 0)
    fd = _syscall(_SYS_OPENAT2, _AT_FDCWD, b"/", ctypes.byref(how), ctypes.sizeof(how))
    if fd >= 0:
        os.close(fd)
        return True
    return ctypes.get_errno() not in (errno.ENOSYS, errno.EPERM)


def _openat2(root_fd: int, path: str, flags: int, mode: int) -> int:
    creating = flags & os.O_CREAT or flags & os.O_TMPFILE == os.O_TMPFILE  # O_TMPFILE includes O_DIRECTORY
    how = _OpenHow(flags | os.O_CLOEXEC, mode if creating else 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    encoded = os.fsencode(path)
    for _ in range(_MAX_RETRIES):
        fd = _syscall(_SYS_OPENAT2, root_fd, encoded, ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            return fd
        error = ctypes.get_errno()
        if error not in (errno.EAGAIN, errno.EINTR):
            break
    raise OSError(error, os.strerror(error), path)


def _open_userspace(root_fd: int, path: str, flags: int, mode: int) -> int:
    """``openat2(RESOLVE_IN_ROOT)`` done by hand: one ``O_NOFOLLOW`` step per component."""
    walk = _Walk(root_fd)
    try:
        return walk.open(path, flags, mode)
    finally:
        walk.close()


class _Walk:
    """Where the userspace resolver is: the directories it walked into below the root."""

    def __init__(self, root_fd: int):
        self.root_fd = root_fd
        self.stack: list[int] = []  # O_PATH fds, innermost last
        self.links = 0

    @property
    def here(self) -> int:
        """The directory reached so far."""
        return self.stack[-1] if self.stack else self.root_fd

    def open(self, path: str, flags: int, mode: int) -> int:
        """Resolve ``path`` from the root and open it (see :func:`open_in_root`)."""
        pending = _components(path)[::-1]  # a stack: the next component is pending[-1]
        while pending:
            name = pending.pop()
            last = not pending
            if name == "..":
                self._up()
            elif (target := self._symlink(name, last, follow=not (last and flags & os.O_NOFOLLOW))) is not None:
                pending.extend(reversed(_components(target)))
            elif last:
                return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.here)
            else:
                self.stack.append(os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=self.here))
        return os.open(".", flags | os.O_CLOEXEC, mode, dir_fd=self.here)

    def _symlink(self, name: str, last: bool, follow: bool) -> str | None:
        """The target of ``name`` if it is a symlink to follow (then relative to where we are)."""
        try:
            info = os.stat(name, dir_fd=self.here, follow_symlinks=False)
        except FileNotFoundError:
            if last:
                return None  # to be created, perhaps
            raise
        if not (stat.S_ISLNK(info.st_mode) and follow):
            return None
        self.links += 1
        if self.links > _MAX_SYMLINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), name)
        target = os.readlink(name, dir_fd=self.here)
        if target.startswith("/"):
            self.close()  # back at the root
        return target

    def _up(self) -> None:
        if self.stack:
            os.close(self.stack.pop())

    def close(self) -> None:
        """Close every directory walked into: back at the root."""
        while self.stack:
            self._up()


def _components(path: str) -> list[str]:
    """The components of ``path`` that matter: no empty ones, no ``.``."""
    return [part for part in path.split("/") if part not in ("", ".")]


def _make_dirs(root_fd: int, parts: list[str], links: int = 0) -> int:
    """Open the directory ``parts`` below the root, creating the components that are missing.

    A dangling symlink on the way is followed (inside the root) and its target created,
    as ``mkdir -p`` would.
    """
    fd = os.dup(root_fd)
    for depth in range(1, len(parts) + 1):
        try:
            below = _open_or_make(root_fd, fd, parts[:depth])
        finally:
            os.close(fd)
        if isinstance(below, str):
            if links >= _MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), "/".join(parts))
            base = [] if below.startswith("/") else parts[:depth - 1]
            return _make_dirs(root_fd, [*base, *below.split("/"), *parts[depth:]], links + 1)
        fd = below
    return fd


def _open_or_make(root_fd: int, parent_fd: int, parts: list[str]) -> int | str:
    """Open the directory ``parts``, making its last component in ``parent_fd`` if missing.

    Returns the fd, or the target of the dangling symlink found in its place.
    """
    try:
        return open_in_root(root_fd, "/".join(parts), _DIR_FLAGS)
    except FileNotFoundError:
        pass
    try:
        os.mkdir(parts[-1], 0o755, dir_fd=parent_fd)
    except FileExistsError:
        return os.readlink(parts[-1], dir_fd=parent_fd)  # EINVAL: something else appeared there
    return os.open(parts[-1], _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd)
