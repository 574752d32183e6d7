"""Small file-system helpers shared by the stages."""

from __future__ import annotations

import errno
import os

TYPE_CHECKING = False  # type checkers treat this as True; these imports serve annotations only
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")

_TEMP_ATTEMPTS = 100  # as tempfile.mkstemp: give up after this many names already taken


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o644,
                 tmp_dir: str | os.PathLike[str] | None = None, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that readers see the old file or the new one, never a mix.

    The temporary file lives in ``tmp_dir`` (default: beside ``path``; it must be on the
    same file system) and is removed if anything fails. ``durable`` also survives a power
    loss (fsync before the rename).
    """
    path = os.fspath(path)
    fd, name = create_temp_file(os.fspath(tmp_dir) if tmp_dir else os.path.dirname(path) or ".",
                                f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(name, path)
    except BaseException:
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
        raise


def create_temp_file(directory: str | os.PathLike[str], prefix: str) -> tuple[int, str]:
    """Create a new, private (0600) file named ``prefix`` + random characters in ``directory``;
    return its fd (open for writing) and path.

    What ``tempfile.mkstemp`` does, without importing ``tempfile`` (and ``shutil`` and
    ``random`` with it: ~6 ms of every runtime command's start-up).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return _create_unique(directory, prefix, lambda name: os.open(name, flags, 0o600))


def make_temp_dir(directory: str | os.PathLike[str], prefix: str) -> str:
    """Create a new, private (0700) directory named ``prefix`` + random characters in ``directory``
    and return its path: ``tempfile.mkdtemp`` without ``tempfile``."""
    return _create_unique(directory, prefix, lambda name: os.mkdir(name, 0o700))[1]


def _create_unique(directory: str | os.PathLike[str], prefix: str, create: Callable[[str], T]) -> tuple[T, str]:
    for _ in range(_TEMP_ATTEMPTS):
        name = os.path.join(directory, f"{prefix}{os.urandom(6).hex()}")
        try:
            return create(name), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name", os.path.join(directory, f"{prefix}*"))


def write_in_one_call(path: str, data: str) -> None:
    """Write ``data`` with a single write(2), as /proc and /sys files (uid_map, sysctls) demand."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Remove a directory tree as far as possible, like ``shutil.rmtree(path, ignore_errors=True)``.

    Without importing ``shutil`` and the compression modules it loads (~3 ms of a runtime
    ``delete`` and of every ``run --rm``). ``os.fwalk`` works on directory fds and never
    follows a symlink, which is removed itself, so a tree a container wrote cannot lead
    the removal outside it; a ``path`` that is a symlink is left alone.
    """
    try:
        for _, dirs, files, fd in os.fwalk(path, topdown=False):
            for name in files:
                _remove_entry(name, fd, directory=False)
            for name in dirs:
                _remove_entry(name, fd, directory=True)
        os.rmdir(path)
    except OSError:  # gone already (fwalk's stat of path), or not empty: removed as far as possible
        pass


def _remove_entry(name: str, dir_fd: int, directory: bool) -> None:
    try:
        if directory:
            try:
                os.rmdir(name, dir_fd=dir_fd)
            except NotADirectoryError:  # fwalk lists a symlink to a directory among the directories
                os.unlink(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass
