"""Hostile layer tars, and a way to prove that nothing outside a directory changed.

``images.tar_layer`` cleans paths (no leading ``/``, fixed metadata); the tars here are
written exactly as described, with the names, link targets, types, owners and PAX
records an attacker would choose.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from .images import MTIME


@dataclass(frozen=True)
class Raw:
    """One tar member, written verbatim (``type`` is a tarfile type such as ``tarfile.SYMTYPE``)."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    linkname: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = MTIME
    devmajor: int = 0
    devminor: int = 0
    pax: dict[str, str] = field(default_factory=dict)


def raw_tar(members: list[Raw], format: int = tarfile.PAX_FORMAT) -> bytes:
    """An uncompressed tar of ``members`` in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=format) as tar:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type, info.linkname, info.mode = member.type, member.linkname, member.mode
            info.uid, info.gid, info.mtime = member.uid, member.gid, member.mtime
            info.devmajor, info.devminor = member.devmajor, member.devminor
            info.pax_headers = dict(member.pax)
            regular = member.type in (tarfile.REGTYPE, tarfile.AREGTYPE)
            info.size = len(member.data) if regular else 0
            tar.addfile(info, io.BytesIO(member.data) if regular else None)
    return buf.getvalue()


def snapshot(top: Path, skip: Path | None = None) -> dict[str, tuple[object, ...]]:
    """Everything observable about ``top`` and the tree below it, except the ``skip`` subtree.

    Type, mode, owner, size, link count, inode, mtime, content digest, link target and
    xattrs of every entry: two equal snapshots mean nothing was created, changed or
    removed there (atime and ctime are left out: reading and hard-link probes touch them).
    """
    result = {str(top): _describe(top)}
    for directory, dirs, files in os.walk(top):
        if skip is not None and skip.name in dirs and Path(directory) == skip.parent:
            dirs.remove(skip.name)
        for name in dirs + files:
            path = Path(directory, name)
            result[str(path)] = _describe(path)
    return result


def _describe(path: Path) -> tuple[object, ...]:
    info = os.lstat(path)
    content: object = None
    if stat.S_ISREG(info.st_mode):
        content = hashlib.sha256(path.read_bytes()).hexdigest()
    elif stat.S_ISLNK(info.st_mode):
        content = os.readlink(path)
    xattrs = {} if stat.S_ISLNK(info.st_mode) else {
        key: os.getxattr(path, key, follow_symlinks=False) for key in os.listxattr(path, follow_symlinks=False)}
    return (info.st_mode, info.st_uid, info.st_gid, info.st_size, info.st_nlink, info.st_ino,
            info.st_mtime_ns, content, tuple(sorted(xattrs.items())))
