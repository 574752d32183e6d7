"""The bundle's mtree manifest, kept up to date while layers are applied.

The extractor records every inode it makes (and forgets the ones whiteouts remove), so
the manifest needs no second pass over the rootfs. It is written in go-mtree's text
format with the keywords and layout umoci writes at unpack time (``umoci unpack`` runs
``mtree.Walk`` with ``size,type,uid,gid,mode,link,nlink,tar_time,sha256digest,xattr``),
so umoci and go-mtree can read and check it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import pwd
import time
from pathlib import Path

TYPE_CHECKING = False  # type checkers treat this as True; this import serves annotations only
if TYPE_CHECKING:
    from collections.abc import Iterator

KEYWORDS = ("size", "type", "uid", "gid", "mode", "link", "nlink", "tar_time", "sha256digest", "xattr")
DIR, FILE, LINK, CHAR, BLOCK, FIFO = "dir", "file", "link", "char", "block", "fifo"
_DEFAULT_SET = ("type=file", "nlink=1", "mode=0664")  # go-mtree's defaults, minus "flags" (not a keyword here)
_GLOB = frozenset(b"*?[#")
# vis(3) as go-mtree calls it (VIS_WHITE | VIS_OCTAL | VIS_GLOB): printable ASCII stays,
# a backslash is doubled, anything else (and glob characters) becomes \ooo.
_VIS = tuple("\\\\" if b == 0x5C else chr(b) if 0x21 <= b <= 0x7E and b not in _GLOB else f"\\{b:03o}"
             for b in range(256))


class Inode:
    """What the manifest says about one inode; hard links share the object.

    ``uid``/``gid`` are the owner on disk, ``xattrs`` the attributes actually set.
    ``children`` maps names to inodes for a directory and is None otherwise.
    """

    __slots__ = ("kind", "mode", "uid", "gid", "mtime_ns", "size", "link", "sha256", "xattrs", "nlink", "children")

    def __init__(self, kind: str, mode: int, uid: int, gid: int, mtime_ns: int, size: int = 0, link: str = "",
                 sha256: str = "", xattrs: dict[str, bytes] | None = None, nlink: int = 1,
                 children: dict[str, Inode] | None = None):
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime_ns = mtime_ns
        self.size = size
        self.link = link
        self.sha256 = sha256
        self.xattrs = {} if xattrs is None else xattrs
        self.nlink = nlink
        self.children = children


class Mtree:
    """The tree of inodes under the rootfs, and its go-mtree rendering."""

    def __init__(self, tree: Path, root: Inode):
        self.tree = tree
        self.root = root

    def lookup(self, path: str) -> Inode | None:
        """The inode at ``path`` (relative, no symlinks), or None."""
        node: Inode | None = self.root
        for name in _parts(path):
            if node is None or node.children is None:
                return None
            node = node.children.get(name)
        return node

    def ensure_dir(self, path: str, template: Inode) -> Inode:
        """The directory inode at ``path``, recording missing ones as copies of ``template``.

        For directories made implicitly (an entry's parent that its layer never listed).
        """
        node = self.root
        for name in _parts(path):
            if node.children is None:
                break
            if name not in node.children:
                node.children[name] = Inode(DIR, template.mode, template.uid, template.gid, template.mtime_ns,
                                            children={})
            node = node.children[name]
        if node.children is None:
            raise NotADirectoryError(f"{path} is not a directory in the manifest")
        return node

    @staticmethod
    def attach(parent: Inode, name: str, inode: Inode) -> None:
        """Record ``inode`` as ``name`` in the directory ``parent``."""
        assert parent.children is not None
        parent.children[name] = inode

    @staticmethod
    def detach(parent: Inode, name: str) -> None:
        """Forget ``name`` (and, for a directory, everything below it)."""
        assert parent.children is not None
        stack = [parent.children.pop(name)]
        while stack:
            node = stack.pop()
            node.nlink -= 1
            if node.children:
                stack.extend(node.children.values())

    def directories(self) -> Iterator[tuple[str, Inode]]:
        """Every directory with its path, each one after everything below it."""
        order: list[tuple[str, Inode]] = []
        stack = [("", self.root)]
        while stack:
            path, node = stack.pop()
            order.append((path, node))
            assert node.children is not None
            stack.extend((f"{path}/{name}" if path else name, child)
                         for name, child in node.children.items() if child.kind == DIR)
        return reversed(order)

    def write(self, path: Path) -> None:
        """Write the manifest to ``path`` (go-mtree text format)."""
        path.write_bytes(os.fsencode(self.render()))

    def render(self) -> str:
        """The manifest text: header comments, then a walk like go-mtree's ``Walk``."""
        lines = _header(self.tree)
        _Renderer(lines).tree(self.root)
        return "\n".join(lines) + "\n"


def vis(text: str) -> str:
    """Encode a file name or link target the way go-mtree does (``strvis``-style)."""
    return "".join(_VIS[b] for b in os.fsencode(text))


def keyvals(inode: Inode) -> list[str]:
    """The ``keyword=value`` pairs of one inode, in umoci's keyword order."""
    pairs = [f"size={inode.size}", f"type={inode.kind}", f"uid={inode.uid}", f"gid={inode.gid}",
             f"mode={_octal(inode.mode)}"]
    if inode.kind == LINK:
        pairs.append(f"link={vis(inode.link)}")
    pairs += [f"nlink={inode.nlink}", f"tar_time={inode.mtime_ns // 1_000_000_000}.000000000"]
    if inode.kind == FILE:
        pairs.append(f"sha256digest={inode.sha256}")
    if inode.kind in (FILE, DIR):  # go-mtree lists xattrs of regular files and directories only
        pairs += [f"xattr.{vis(name)}={base64.b64encode(value).decode()}"
                  for name, value in sorted(inode.xattrs.items())]
    return pairs


class _Renderer:
    """go-mtree's walk order: a directory's line, its non-directories, then its subdirectories."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        self.current_set: tuple[str, ...] = ()

    def tree(self, root: Inode) -> None:
        """Render ``root`` and everything below it (iteratively: trees can be deep)."""
        pending: list[tuple[str, str, Inode] | None] = [(".", "", root)]  # None: a directory's ".."
        while pending:
            item = pending.pop()
            if item is None:
                self.lines.append("..")
                continue
            subdirectories = self._directory(*item)
            pending.append(None)
            pending += reversed(subdirectories)

    def _directory(self, name: str, path: str, inode: Inode) -> list[tuple[str, str, Inode]]:
        """Comment, ``/set`` when the owner changes, the directory's line and its non-directories."""
        shown = path or "."
        self.lines += ["", f"# {shown}" if shown.isprintable() else f"# {vis(shown)}"]
        owner = (f"uid={inode.uid}", f"gid={inode.gid}")
        if not set(owner) <= set(self.current_set):
            self.current_set = (*_DEFAULT_SET, *owner)
            self.lines.append("/set " + " ".join(self.current_set))
        self.lines.append(f"{name} {self._changed(inode)}")
        assert inode.children is not None
        children = [(child_name, inode.children[child_name]) for child_name in sorted(inode.children, key=os.fsencode)]
        self.lines += [f"    {vis(child_name)} {self._changed(child)}" for child_name, child in children
                       if child.kind != DIR]
        return [(vis(child_name), f"{path}/{child_name}" if path else child_name, child)
                for child_name, child in children if child.kind == DIR]

    def _changed(self, inode: Inode) -> str:
        """The inode's keyword=value pairs that the current ``/set`` does not already say."""
        return " ".join(kv for kv in keyvals(inode) if kv not in self.current_set)


def _header(tree: Path) -> list[str]:
    """go-mtree's signature comments: user, machine, tree, date, keywords."""
    lines = []
    with contextlib.suppress(KeyError):
        lines.append(f"#{'user: ':>16}{pwd.getpwuid(os.geteuid()).pw_name}")
    lines.append(f"#{'machine: ':>16}{os.uname().nodename}")
    lines.append(f"#{'tree: ':>16}{os.path.normpath(tree)}")
    now = time.localtime()
    lines.append(f"#{'date: ':>16}{time.strftime('%a %b', now)} {now.tm_mday} {time.strftime('%H:%M:%S %Y', now)}")
    lines.append(f"#{'keywords: ':>16}{','.join(KEYWORDS)}")
    return lines


def _octal(mode: int) -> str:
    """Go's ``%#o``: a leading 0, and just ``0`` for zero."""
    return f"0{mode:o}" if mode else "0"


def _parts(path: str) -> list[str]:
    return [name for name in path.split("/") if name]
