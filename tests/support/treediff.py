"""Compare two unpacked root filesystems entry by entry (ours against umoci's)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def describe(root: Path, ignore_xattrs: bool = False) -> dict[str, tuple]:
    """path -> (type, mode, uid, gid, size, content sha256 or link target, xattrs) for every entry."""
    entries = {}
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(directory) / name
            entries[str(path.relative_to(root))] = _entry(path, ignore_xattrs)
    return entries


def _entry(path: Path, ignore_xattrs: bool) -> tuple:
    info = path.lstat()
    kind = stat.S_IFMT(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        content = os.readlink(path)
    elif stat.S_ISREG(info.st_mode):
        content = hashlib.sha256(path.read_bytes()).hexdigest()
    elif stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
        content = (os.major(info.st_rdev), os.minor(info.st_rdev))
    else:
        content = None
    size = info.st_size if stat.S_ISREG(info.st_mode) else 0
    xattrs = {} if ignore_xattrs else _xattrs(path)
    return kind, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, size, content, tuple(sorted(xattrs.items()))


def _xattrs(path: Path) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {name: os.getxattr(path, name, follow_symlinks=False) for name in names}


def differences(ours: Path, theirs: Path, ignore_xattrs: bool = False) -> list[str]:
    """Human-readable differences between two trees (empty when they are the same)."""
    a, b = describe(ours, ignore_xattrs), describe(theirs, ignore_xattrs)
    problems = [f"only in ours: {p}" for p in sorted(a.keys() - b.keys())]
    problems += [f"only in umoci's: {p}" for p in sorted(b.keys() - a.keys())]
    problems += [f"{p}: ours {a[p]} != umoci's {b[p]}" for p in sorted(a.keys() & b.keys()) if a[p] != b[p]]
    return problems
