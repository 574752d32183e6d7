"""Creating and joining a container's namespaces, and mapping its user and group ids.

``linux.namespaces`` lists the namespaces a container gets: an entry with a ``path``
joins an existing namespace (``setns``), one without creates a new one (``unshare``).
A new user namespace also needs ``linux.uidMappings``/``gidMappings``, which the runtime
writes from outside (``/proc/<pid>/uid_map``) once the child has unshared it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pwd

from ocitool.errors import OcitoolError
from ocitool.fsutil import write_in_one_call
from ocitool.runtime import syscalls

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

NAMESPACE_FLAGS = {
    "pid": syscalls.CLONE_NEWPID,
    "network": syscalls.CLONE_NEWNET,
    "mount": syscalls.CLONE_NEWNS,
    "ipc": syscalls.CLONE_NEWIPC,
    "uts": syscalls.CLONE_NEWUTS,
    "user": syscalls.CLONE_NEWUSER,
    "cgroup": syscalls.CLONE_NEWCGROUP,
    "time": syscalls.CLONE_NEWTIME,
}
# The spec's type -> the entry's name in /proc/<pid>/ns/.
PROC_NAMES = {kind: {"network": "net", "mount": "mnt"}.get(kind, kind) for kind in NAMESPACE_FLAGS}

MAX_ID_MAPPINGS = 340  # lines the kernel accepts in uid_map/gid_map (since Linux 4.15)
_NS_GET_NSTYPE = 0xB703  # ioctl on an nsfs file: its CLONE_NEW* type
_UINT32 = 1 << 32


class Namespace:
    """One ``linux.namespaces`` entry: its type, and the namespace file to join, if any."""

    __slots__ = ("type", "path")

    def __init__(self, type: str, path: str | None = None) -> None:
        self.type = type
        self.path = path

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Namespace):
            return NotImplemented
        return (self.type, self.path) == (other.type, other.path)

    def __repr__(self) -> str:
        return f"Namespace(type={self.type!r}, path={self.path!r})"

    @property
    def flag(self) -> int:
        """The ``CLONE_NEW*`` flag of this type."""
        return NAMESPACE_FLAGS[self.type]


class IdMapping:
    """A range of ``size`` ids starting at ``container_id`` inside, ``host_id`` outside."""

    __slots__ = ("container_id", "host_id", "size")

    def __init__(self, container_id: int, host_id: int, size: int) -> None:
        self.container_id = container_id
        self.host_id = host_id
        self.size = size

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdMapping):
            return NotImplemented
        return (self.container_id, self.host_id, self.size) == (other.container_id, other.host_id, other.size)

    def __repr__(self) -> str:
        return f"IdMapping(container_id={self.container_id}, host_id={self.host_id}, size={self.size})"

    def line(self) -> str:
        """The mapping as a line of ``/proc/<pid>/uid_map``."""
        return f"{self.container_id} {self.host_id} {self.size}\n"


def parse_namespaces(linux: dict[str, Any]) -> list[Namespace]:
    """The namespaces of ``linux`` (the config's ``linux`` object), checked.

    Refuses unknown types, duplicates, relative paths, and mappings that do not fit the
    user namespace: a new one needs ``uidMappings`` and ``gidMappings``, a joined one
    already has its own, and mappings without a user namespace would be ignored.
    """
    entries = linux.get("namespaces") or []
    if not isinstance(entries, list):
        raise OcitoolError("linux.namespaces: must be a list")
    namespaces = [_parse_namespace(entry, f"linux.namespaces[{index}]") for index, entry in enumerate(entries)]
    seen: set[str] = set()
    for index, namespace in enumerate(namespaces):
        if namespace.type in seen:
            raise OcitoolError(f"linux.namespaces[{index}].type: {namespace.type!r} is listed twice")
        seen.add(namespace.type)
    _check_user_mappings(linux, namespaces)
    return namespaces


def _parse_namespace(entry: Any, where: str) -> Namespace:
    if not isinstance(entry, dict):
        raise OcitoolError(f"{where}: must be an object")
    kind, path = entry.get("type"), entry.get("path")
    if kind not in NAMESPACE_FLAGS:
        raise OcitoolError(f"{where}.type: {kind!r} is not one of {', '.join(NAMESPACE_FLAGS)}")
    if path is not None and (not isinstance(path, str) or not path.startswith("/")):
        raise OcitoolError(f"{where}.path: must be an absolute path")
    return Namespace(kind, path or None)


def _check_user_mappings(linux: dict[str, Any], namespaces: list[Namespace]) -> None:
    uids = parse_id_mappings(linux.get("uidMappings"), "linux.uidMappings")
    gids = parse_id_mappings(linux.get("gidMappings"), "linux.gidMappings")
    user = next((ns for ns in namespaces if ns.type == "user"), None)
    if user is None and (uids or gids):
        raise OcitoolError("linux.uidMappings: mappings need a user namespace in linux.namespaces")
    if user is not None and user.path and (uids or gids):
        raise OcitoolError("linux.uidMappings: a joined user namespace (with a path) keeps its own mappings; "
                           "remove uidMappings and gidMappings")
    if user is not None and not user.path and not (uids and gids):
        raise OcitoolError("linux.uidMappings: a new user namespace needs both uidMappings and gidMappings")


def parse_id_mappings(entries: Any, where: str) -> list[IdMapping]:
    """Check ``linux.uidMappings`` or ``gidMappings`` (spec form) and return them."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise OcitoolError(f"{where}: must be a list")
    if len(entries) > MAX_ID_MAPPINGS:
        raise OcitoolError(f"{where}: the kernel accepts at most {MAX_ID_MAPPINGS} mappings")
    return [_parse_id_mapping(entry, f"{where}[{index}]") for index, entry in enumerate(entries)]


def _parse_id_mapping(entry: Any, where: str) -> IdMapping:
    if not isinstance(entry, dict):
        raise OcitoolError(f"{where}: must be an object")
    values = []
    for key in ("containerID", "hostID", "size"):
        value = entry.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _UINT32:
            raise OcitoolError(f"{where}.{key}: must be an integer from 0 to {_UINT32 - 1}")
        values.append(value)
    if values[2] == 0:
        raise OcitoolError(f"{where}.size: must not be 0")
    return IdMapping(*values)


def unshare_flags(namespaces: Iterable[Namespace]) -> int:
    """The ``unshare``/``clone`` flags creating the namespaces that have no path."""
    flags = 0
    for namespace in namespaces:
        if not namespace.path:
            flags |= namespace.flag
    return flags


def join_namespaces(namespaces: Iterable[Namespace]) -> None:
    """``setns`` into every namespace that has a path, checking each file's type first.

    All files are opened before joining any, because joining a mount namespace changes
    what later paths mean. The order makes the joins possible: an unprivileged caller
    gets its capabilities from the user namespace, so that one comes first; root keeps
    its host capabilities only until it joins a user namespace, so that one comes after
    the others. The mount namespace always comes last.
    """
    joining = sorted((ns for ns in namespaces if ns.path), key=_join_rank)
    opened: list[tuple[Namespace, int]] = []
    try:
        for namespace in joining:
            opened.append((namespace, _open_namespace(namespace)))
        for namespace, fd in opened:
            _setns(namespace, fd)
    finally:
        for _, fd in opened:
            os.close(fd)


def _join_rank(namespace: Namespace) -> int:
    if namespace.type == "mount":
        return 2
    if namespace.type == "user":
        return 0 if os.geteuid() != 0 else 1
    return 0 if os.geteuid() == 0 else 1


def _open_namespace(namespace: Namespace) -> int:
    """Open ``namespace.path`` and check that it is a namespace of the right type."""
    where = f"linux.namespaces ({namespace.type}).path"
    try:
        fd = os.open(namespace.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise OcitoolError(f"{where}: cannot open {namespace.path}: {exc.strerror}") from None
    try:
        kind = fcntl.ioctl(fd, _NS_GET_NSTYPE)
    except OSError:
        os.close(fd)
        raise OcitoolError(f"{where}: {namespace.path} is not a namespace file") from None
    if kind != namespace.flag:
        os.close(fd)
        actual = next((name for name, flag in NAMESPACE_FLAGS.items() if flag == kind), hex(kind))
        raise OcitoolError(f"{where}: {namespace.path} is a {actual} namespace, not {namespace.type}")
    return fd


def _setns(namespace: Namespace, fd: int) -> None:
    if namespace.type == "user" and _same_file(fd, "/proc/self/ns/user"):
        return  # setns into the user namespace we are in fails with EINVAL; we are there already
    try:
        syscalls.setns(fd, namespace.flag)
    except OSError as exc:
        raise OcitoolError(f"linux.namespaces ({namespace.type}).path: cannot join {namespace.path}: "
                           f"{errno.errorcode.get(exc.errno, exc.errno)} ({os.strerror(exc.errno)})") from None


def _same_file(fd: int, path: str) -> bool:
    mine, theirs = os.stat(path), os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def write_id_mappings(pid: int, uid_mappings: Sequence[dict[str, Any]],
                      gid_mappings: Sequence[dict[str, Any]]) -> None:
    """Map ids for ``pid``, a child that has just unshared its user namespace.

    The mappings are in spec form (``linux.uidMappings``/``gidMappings``). Root writes
    ``/proc/<pid>/uid_map`` and ``gid_map`` itself. An unprivileged caller may only map its
    own id (one id; for groups after writing "deny" to ``setgroups``, as the kernel requires);
    anything more goes through the setuid helpers ``newuidmap``/``newgidmap`` (package
    ``uidmap``), which check ``/etc/subuid`` and ``/etc/subgid``.
    """
    uids = parse_id_mappings(list(uid_mappings), "linux.uidMappings")
    gids = parse_id_mappings(list(gid_mappings), "linux.gidMappings")
    _map_ids(pid, "uid", uids, os.geteuid())
    _map_ids(pid, "gid", gids, os.getegid())


def _map_ids(pid: int, kind: str, mappings: list[IdMapping], own_id: int) -> None:
    if os.geteuid() == 0:
        _write_proc(pid, f"{kind}_map", "".join(m.line() for m in mappings))
    elif len(mappings) == 1 and mappings[0].size == 1 and mappings[0].host_id == own_id:
        if kind == "gid":
            _write_proc(pid, "setgroups", "deny")
        _write_proc(pid, f"{kind}_map", mappings[0].line())
    else:
        _run_id_helper(pid, kind, mappings, own_id)


def _write_proc(pid: int, name: str, data: str) -> None:
    """Write ``data`` to ``/proc/<pid>/<name>`` in one ``write``, as the kernel requires."""
    path = f"/proc/{pid}/{name}"
    try:
        write_in_one_call(path, data)
    except OSError as exc:
        hint = ""
        if isinstance(exc, PermissionError) and os.geteuid() != 0:
            hint = f" (an unprivileged runtime can write it only while process {pid} is dumpable)"
        raise OcitoolError(f"cannot write {data.strip()!r} to {path}: {exc.strerror}{hint}") from None


def _run_id_helper(pid: int, kind: str, mappings: list[IdMapping], own_id: int) -> None:
    """Map through ``newuidmap``/``newgidmap``, after checking they exist and may do it."""
    import shutil  # with subprocess ~6 ms to import: only rootless containers mapping several ids need them
    import subprocess

    helper, where = f"new{kind}map", f"linux.{kind}Mappings"
    program = shutil.which(helper)
    if program is None:
        raise OcitoolError(f"{where}: an unprivileged user can map only its own {kind} ({own_id}) itself; "
                           f"these mappings need {helper} from the 'uidmap' package, which is not installed")
    ranges = _subordinate_ranges(f"/etc/sub{kind}")
    for mapping in mappings:
        if not _allowed(mapping, ranges, own_id):
            raise OcitoolError(f"{where}: host {kind}s {mapping.host_id}-{mapping.host_id + mapping.size - 1} "
                               f"are not yours: /etc/sub{kind} grants {_describe(ranges)}")
    args = [str(value) for m in mappings for value in (m.container_id, m.host_id, m.size)]
    result = subprocess.run([program, str(pid), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise OcitoolError(f"{where}: {helper} failed: {result.stderr.strip() or f'exit {result.returncode}'}")


def _subordinate_ranges(path: str) -> list[tuple[int, int]]:
    """The (start, count) ranges the ``/etc/subuid``-style file ``path`` grants the caller's user."""
    names = {str(os.getuid())}
    try:
        names.add(pwd.getpwuid(os.getuid()).pw_name)
    except KeyError:  # a uid without a passwd entry
        pass
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return []
    ranges = []
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in names and fields[1].isdigit() and fields[2].isdigit():
            ranges.append((int(fields[1]), int(fields[2])))
    return ranges


def _allowed(mapping: IdMapping, ranges: list[tuple[int, int]], own_id: int) -> bool:
    if mapping.size == 1 and mapping.host_id == own_id:
        return True
    end = mapping.host_id + mapping.size
    return any(start <= mapping.host_id and end <= start + count for start, count in ranges)


def _describe(ranges: list[tuple[int, int]]) -> str:
    return ", ".join(f"{start}-{start + count - 1}" for start, count in ranges) or "nothing"


def in_user_namespace() -> bool:
    """True inside a user namespace other than the initial one (root there is not the host's root)."""
    try:
        with open("/proc/self/uid_map", encoding="utf-8") as file:
            return file.read().split() != ["0", "0", "4294967295"]
    except OSError:
        return False
