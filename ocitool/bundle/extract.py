"""Apply an image's layers, in order, onto an empty rootfs (what ``umoci unpack`` does).

Each layer tar is read once, as a stream. Entries become regular files, directories,
symlinks, hard links, device nodes and fifos with their owner, mode (setuid, setgid and
sticky bits included), mtime and ``SCHILY.xattr.*`` attributes. Whiteouts follow
image-spec layer.md: ``.wh.NAME`` removes NAME from the layers below, ``.wh..wh..opq``
hides everything the layers below put in its directory; neither touches what the same
layer made, whatever the order of the tar.

Safety: every filesystem call is relative to a directory fd obtained through
:mod:`ocitool.securepath` (symlinks resolved as if the rootfs were ``/``) and acts on the
last component without following it. Names are made relative (``/etc/x`` is ``etc/x``)
and refused if ``..`` climbs above the root; hard links are made to the named entry
itself, never to what a symlink there points at.

Directory modes and mtimes are applied at the very end, deepest first: until then every
directory stays writable and searchable by its owner (which is what lets an unprivileged
user fill a directory whose final mode is 0555), and its mtime is not disturbed by the
entries created inside it afterwards.

Rootless mode (not root): nothing is chowned; as umoci does, a non-root owner is kept in
the ``user.rootlesscontainers`` xattr; device nodes are skipped (one warning); xattrs
the kernel refuses to unprivileged users are skipped.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tarfile
import time
from pathlib import Path

from ocitool.bundle.layers import LayerSource, LayerTar, open_layer
from ocitool.bundle.mtree import BLOCK, CHAR, DIR, FIFO, FILE, LINK, Inode, Mtree
from ocitool.errors import LayerError
from ocitool.securepath import open_in_root, open_parent_in_root, path_in_root
from ocitool.log import get_logger

TYPE_CHECKING = False  # type checkers treat this as True; these names serve annotations only
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    _Maker = Callable[[LayerTar, tarfile.TarInfo, int, str, str], "Inode | None"]

log = get_logger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
ROOTLESS_XATTR = "user.rootlesscontainers"
_PAX_XATTR = "SCHILY.xattr."
_NOOP_ID = 0xFFFFFFFF  # rootlesscontainers.proto: "leave this id unchanged"
_MAX_OPEN_DIRS = 256
# Deeper trees are refused: real images nest a few dozen levels, and removing a deeper tree
# (whiteouts here, clean-up after a failed unpack) would exhaust Python's recursion limit.
MAX_DEPTH = 512
_DIR_PATH_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_SPECIAL_KINDS = {CHAR: stat.S_IFCHR, BLOCK: stat.S_IFBLK, FIFO: stat.S_IFIFO}


def apply_layers(rootfs: Path, layers: list[LayerSource], *, rootless: bool) -> Mtree:
    """Extract ``layers`` (lowest first) into the empty directory ``rootfs``; return its manifest.

    ``rootfs`` is created if missing. Raises ``LayerError`` or ``DigestMismatchError``
    for a layer that is corrupt, does not match its digests or tries to reach outside
    ``rootfs``; the rootfs is then half-made and the caller must remove it.
    """
    extractor = _Extractor(rootfs, rootless)
    try:
        for layer in layers:
            with open_layer(layer) as tar:
                extractor.apply(tar, layer.digest)
        extractor.finish()
    finally:
        extractor.close()
    return extractor.mtree


def rootless_xattr(uid: int, gid: int) -> bytes:
    """The ``user.rootlesscontainers`` value for an owner, byte for byte as umoci writes it.

    A protobuf ``Resource{uint32 uid = 1; uint32 gid = 2}`` where an id of 0 is written
    as the "unchanged" id 0xFFFFFFFF (so no field is ever the proto3 default).
    """
    return b"\x08" + _varint(uid or _NOOP_ID) + b"\x10" + _varint(gid or _NOOP_ID)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _Dir:
    """An open directory of the rootfs: fd (O_PATH), path without symlinks, and its inode."""

    __slots__ = ("fd", "path", "node")

    def __init__(self, fd: int, path: str, node: Inode):
        self.fd = fd
        self.path = path
        self.node = node


class _Extractor:
    """The state of one unpack: the rootfs, its manifest so far, open directories."""

    def __init__(self, rootfs: Path, rootless: bool):
        self.rootless = rootless
        self.layer = ""
        self.upper: set[str] = set()  # paths made by the current layer, and their parents
        self.skipped: dict[str, None] = {}  # device nodes not made (rootless), in order
        self.warned: set[object] = set()  # kinds of warning given already
        self.dirs: dict[str, _Dir] = {}  # lexical parent path -> open directory
        self.stale = False  # a directory or symlink was removed: self.dirs may lie
        uid, gid = (os.geteuid(), os.getegid()) if rootless else (0, 0)
        self.implicit = Inode(DIR, 0o755, uid, gid, time.time_ns(), children={})
        self.root_fd = _open_empty_dir(rootfs)
        # umoci sets the root's mtime to the epoch, since few layers have an entry for it.
        self.mtree = Mtree(rootfs, Inode(DIR, 0o755, uid, gid, 0, children={}))
        self.root = _Dir(self.root_fd, "", self.mtree.root)

    # -- per layer and per entry --------------------------------------------

    def apply(self, tar: LayerTar, digest: str) -> None:
        """Apply one layer's entries."""
        self.layer = digest
        self.upper = set()
        for info in tar:
            self._entry(tar, info)

    def _entry(self, tar: LayerTar, info: tarfile.TarInfo) -> None:
        if self.stale or len(self.dirs) >= _MAX_OPEN_DIRS:
            self._forget_dirs()
        try:
            path = self._clean(info.name)
            name = path.rpartition("/")[2]
            if name.startswith(WHITEOUT_PREFIX):
                self._whiteout(info, path, name)
            elif not path:
                self._root_entry(info)
            else:
                self._place(tar, info, path, name)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise LayerError(f"layer {self.layer}: cannot extract {info.name!r}: {reason}") from None

    def _place(self, tar: LayerTar, info: tarfile.TarInfo, path: str, name: str) -> None:
        """Create (or, for a directory over a directory, update) the entry at ``path``."""
        where = self._parent(path, create=True)
        existing = where.node.children.get(name)  # type: ignore[union-attr]
        if info.isdir() and existing is not None and existing.kind == DIR:
            self._update_dir(existing, info)
        elif info.islnk():
            self._hardlink(info, where, name, existing)
        else:
            make = self._maker(info)
            if existing is not None:
                self._remove(where.fd, where.node, name, existing)
            inode = make(tar, info, where.fd, name, path)
            if inode is None:
                return
            Mtree.attach(where.node, name, inode)
        self._mark_upper(f"{where.path}/{name}" if where.path else name)

    def _maker(self, info: tarfile.TarInfo) -> _Maker:
        if info.isreg():
            return self._file
        if info.isdir():
            return self._directory
        if info.issym():
            return self._symlink
        if info.ischr() or info.isblk() or info.isfifo():
            return self._special
        raise LayerError(f"layer {self.layer}: {info.name!r} has the unsupported tar entry type {info.type!r}")

    def _clean(self, name: str) -> str:
        """``name`` relative to the root, without ``.`` or ``..``; refused if it climbs out."""
        if "\x00" in name:
            raise LayerError(f"layer {self.layer}: tar entry name {name!r} contains a NUL byte")
        parts: list[str] = []
        for part in name.split("/"):
            if part == "..":
                if not parts:
                    raise LayerError(f"layer {self.layer}: tar entry {name!r} points outside the root filesystem")
                parts.pop()
            elif part and part != ".":
                parts.append(part)
        return "/".join(parts)

    def _root_entry(self, info: tarfile.TarInfo) -> None:
        if not info.isdir():
            raise LayerError(f"layer {self.layer}: tar entry {info.name!r} would replace the root directory")
        self._update_dir(self.mtree.root, info)

    # -- making entries -------------------------------------------------------

    def _file(self, tar: LayerTar, info: tarfile.TarInfo, dir_fd: int, name: str, path: str) -> Inode:
        inode = self._inode(info, FILE, size=info.size)
        fd = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd)
        try:
            inode.sha256 = _copy(tar.content(info), fd)
            self._set_metadata(fd, inode, self._xattrs(info), path)
        finally:
            os.close(fd)
        return inode

    def _directory(self, tar: LayerTar, info: tarfile.TarInfo, dir_fd: int, name: str, path: str) -> Inode:
        os.mkdir(name, 0o700, dir_fd=dir_fd)  # owner-only until finish() applies the real mode
        inode = self._inode(info, DIR, children={})
        inode.xattrs = self._xattrs(info)  # wanted, set by finish()
        return inode

    def _symlink(self, tar: LayerTar, info: tarfile.TarInfo, dir_fd: int, name: str, path: str) -> Inode:
        os.symlink(info.linkname, name, dir_fd=dir_fd)
        inode = self._inode(info, LINK, link=info.linkname, size=len(os.fsencode(info.linkname)))
        inode.mode = 0o777  # what Linux reports for every symlink
        self._set_metadata_at(dir_fd, name, inode, self._xattrs(info), path)
        return inode

    def _special(self, tar: LayerTar, info: tarfile.TarInfo, dir_fd: int, name: str,
                 path: str) -> Inode | None:
        kind = CHAR if info.ischr() else BLOCK if info.isblk() else FIFO
        if self.rootless and kind != FIFO:
            self.skipped[path] = None
            return None
        os.mknod(name, _SPECIAL_KINDS[kind] | 0o600, os.makedev(info.devmajor, info.devminor), dir_fd=dir_fd)
        inode = self._inode(info, kind)
        self._set_metadata_at(dir_fd, name, inode, self._xattrs(info), path)
        return inode

    def _hardlink(self, info: tarfile.TarInfo, where: _Dir, name: str, existing: Inode | None) -> None:
        """Link ``name`` to the inode of the named entry itself (a symlink stays a symlink)."""
        target = self._clean(info.linkname)
        if target in self.skipped:
            self.skipped[f"{where.path}/{name}" if where.path else name] = None
            return
        source, target_name, inode = self._link_target(info, target)
        if source.path == where.path and target_name == name:
            return  # a link to itself: nothing to do
        if existing is not None:
            self._remove(where.fd, where.node, name, existing)
        os.link(target_name, name, src_dir_fd=source.fd, dst_dir_fd=where.fd, follow_symlinks=False)
        inode.nlink += 1
        Mtree.attach(where.node, name, inode)

    def _link_target(self, info: tarfile.TarInfo, target: str) -> tuple[_Dir, str, Inode]:
        """Where a hard link's target is; LayerError unless it is an existing non-directory."""
        source, inode = self.root, self.mtree.root  # what an empty target (the root) names
        if target:
            try:
                source = self._parent(target, create=False)
                inode = source.node.children.get(target.rpartition("/")[2])  # type: ignore[union-attr]
            except (FileNotFoundError, NotADirectoryError):
                inode = None
        if inode is None:
            raise LayerError(f"layer {self.layer}: hard link {info.name!r} points to {info.linkname!r}, "
                             "which does not exist in the root filesystem")
        if inode.kind == DIR:
            raise LayerError(f"layer {self.layer}: hard link {info.name!r} points to the directory {info.linkname!r}")
        return source, target.rpartition("/")[2], inode

    def _update_dir(self, inode: Inode, info: tarfile.TarInfo) -> None:
        """A directory entry over an existing directory keeps its content and takes the new metadata."""
        new = self._inode(info, DIR)
        inode.mode, inode.uid, inode.gid, inode.mtime_ns = new.mode, new.uid, new.gid, new.mtime_ns
        inode.xattrs = self._xattrs(info)

    def _inode(self, info: tarfile.TarInfo, kind: str, **fields: object) -> Inode:
        uid, gid = (self.implicit.uid, self.implicit.gid) if self.rootless else (info.uid, info.gid)
        return Inode(kind, info.mode & 0o7777, uid, gid, _mtime_ns(info), **fields)  # type: ignore[arg-type]

    # -- metadata -------------------------------------------------------------

    def _xattrs(self, info: tarfile.TarInfo) -> dict[str, bytes]:
        """The xattrs an entry asks for (``SCHILY.xattr.*``), plus the rootless owner record."""
        wanted = {key[len(_PAX_XATTR):]: value.encode("utf-8", "surrogateescape")
                  for key, value in info.pax_headers.items() if key.startswith(_PAX_XATTR)}
        if self.rootless:
            wanted.pop(ROOTLESS_XATTR, None)
            if info.uid or info.gid:
                wanted[ROOTLESS_XATTR] = rootless_xattr(info.uid, info.gid)
        return wanted

    def _set_metadata(self, fd: int, inode: Inode, wanted: dict[str, bytes], path: str) -> None:
        """Owner first (chown clears setuid bits and file capabilities), then xattrs (while
        the mode still lets the owner write them), then mode, then times."""
        if not self.rootless:
            os.chown(fd, inode.uid, inode.gid)
        inode.xattrs = self._set_xattrs(fd, wanted, path)
        os.chmod(fd, inode.mode)
        os.utime(fd, ns=(inode.mtime_ns, inode.mtime_ns))

    def _set_metadata_at(self, dir_fd: int, name: str, inode: Inode, wanted: dict[str, bytes], path: str) -> None:
        """:meth:`_set_metadata` for an entry that cannot be opened (symlink, device), never following it."""
        if not self.rootless:
            os.chown(name, inode.uid, inode.gid, dir_fd=dir_fd, follow_symlinks=False)
        if wanted:
            inode.xattrs = self._set_xattrs(f"/proc/self/fd/{dir_fd}/{name}", wanted, path)
        if inode.kind != LINK:
            os.chmod(name, inode.mode, dir_fd=dir_fd, follow_symlinks=False)
        os.utime(name, ns=(inode.mtime_ns, inode.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)

    def _set_xattrs(self, target: int | str, wanted: dict[str, bytes], path: str) -> dict[str, bytes]:
        """Set ``wanted`` on an fd (or a /proc path, not followed); return what could be set.

        Attributes the filesystem does not support (ENOTSUP) or the kernel refuses us
        (EPERM: e.g. ``security.capability`` when not root, ``user.*`` on a symlink) are
        skipped with one warning, silently for our own ``user.rootlesscontainers``.
        """
        done = {}
        for key, value in wanted.items():
            try:
                os.setxattr(target, key, value, follow_symlinks=isinstance(target, int))
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise
                if key != ROOTLESS_XATTR:
                    self._warn_once(f"cannot set extended attribute {key} on /{path} ({exc.strerror}); "
                                    "skipping such attributes", exc.errno)
                continue
            done[key] = value
        return done

    def _warn_once(self, message: str, kind: object) -> None:
        if kind not in self.warned:
            self.warned.add(kind)
            log.warning(message)

    # -- whiteouts and removal ------------------------------------------------

    def _whiteout(self, info: tarfile.TarInfo, path: str, name: str) -> None:
        """Remove what layers below made at the whiteout's target; missing targets are fine."""
        if name.startswith(WHITEOUT_PREFIX * 2) and name != OPAQUE_WHITEOUT:
            return  # other ".wh..wh." names are aufs bookkeeping, not whiteouts
        hidden = name[len(WHITEOUT_PREFIX):]
        if hidden in ("", ".", ".."):
            raise LayerError(f"layer {self.layer}: whiteout {info.name!r} does not name an entry")
        try:
            where = self._parent(path, create=False)
        except (FileNotFoundError, NotADirectoryError):
            return
        assert where.node.children is not None
        names = list(where.node.children) if name == OPAQUE_WHITEOUT else [hidden]
        self._hide([(where.path, where.node, child) for child in names])

    def _hide(self, pending: list[tuple[str, Inode, str]]) -> None:
        """Remove ``(parent path, parent inode, name)`` entries, sparing what this layer made."""
        while pending:
            parent_path, parent, name = pending.pop()
            assert parent.children is not None
            inode = parent.children.get(name)
            path = f"{parent_path}/{name}" if parent_path else name
            if inode is None:
                continue
            if path not in self.upper:
                fd = open_in_root(self.root_fd, parent_path, _DIR_PATH_FLAGS)
                try:
                    self._remove(fd, parent, name, inode)
                finally:
                    os.close(fd)
            elif inode.children:
                pending += [(path, inode, child) for child in inode.children]

    def _remove(self, dir_fd: int, parent: Inode, name: str, inode: Inode) -> None:
        """Delete ``name`` (a whole tree for a directory) from the directory ``dir_fd``."""
        if inode.kind == DIR:
            shutil.rmtree(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)
        if inode.kind in (DIR, LINK):
            self.stale = True  # cached directory fds may now be gone, or reached differently
        Mtree.detach(parent, name)

    def _mark_upper(self, path: str) -> None:
        while path and path not in self.upper:
            self.upper.add(path)
            path = path.rpartition("/")[0]

    # -- directories ----------------------------------------------------------

    def _parent(self, path: str, create: bool) -> _Dir:
        """The open directory holding the entry ``path`` (symlinks in it followed inside the root)."""
        parent = path.rpartition("/")[0]
        if not parent:
            return self.root
        where = self.dirs.get(parent)
        if where is None:
            fd, _ = open_parent_in_root(self.root_fd, path, create_missing_dirs=create)
            try:
                real = path_in_root(self.root_fd, fd)
                if real.count("/") + 2 > MAX_DEPTH:
                    raise LayerError(f"layer {self.layer}: {path!r} is nested more than {MAX_DEPTH} directories deep")
                where = _Dir(fd, real, self.mtree.ensure_dir(real, self.implicit))
            except BaseException:
                os.close(fd)
                raise
            self.dirs[parent] = where
        return where

    def _forget_dirs(self) -> None:
        for where in self.dirs.values():
            os.close(where.fd)
        self.dirs.clear()
        self.stale = False

    def finish(self) -> None:
        """Apply directory metadata, deepest first; record their sizes; report skipped devices."""
        self._forget_dirs()
        for path, inode in self.mtree.directories():
            fd = open_in_root(self.root_fd, path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                self._set_metadata(fd, inode, inode.xattrs, path)
                info = os.fstat(fd)
                inode.size, inode.nlink = info.st_size, info.st_nlink
            finally:
                os.close(fd)
        if self.skipped:
            first = next(iter(self.skipped))
            log.warning("rootless unpack: skipped %d device node(s), such as /%s: only root can create them",
                        len(self.skipped), first)

    def close(self) -> None:
        """Release every file descriptor."""
        self._forget_dirs()
        os.close(self.root_fd)


def _open_empty_dir(path: Path) -> int:
    try:
        path.mkdir(mode=0o755, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise LayerError(f"cannot unpack into {path}: {exc.strerror or exc}") from None
    if os.listdir(fd):
        os.close(fd)
        raise LayerError(f"cannot unpack into {path}: it is not empty")
    return fd


def _copy(chunks: Iterator[bytes | memoryview], fd: int) -> str:
    """Write ``chunks`` to ``fd``; return their sha256 (hex)."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]
    return digest.hexdigest()


def _mtime_ns(info: tarfile.TarInfo) -> int:
    mtime = info.mtime
    return mtime * 1_000_000_000 if isinstance(mtime, int) else round(mtime * 1_000_000_000)
