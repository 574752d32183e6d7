"""Image config to runtime config: image-spec conversion.md for the bundle stage.

The image config's process fields (Entrypoint, Cmd, Env, WorkingDir, User) and its
metadata (Labels and the implicit annotations) are laid over :func:`default_spec`.
``Config.User`` names are resolved against the image's own ``/etc/passwd`` and
``/etc/group``, read so that no symlink or ``..`` in the rootfs can make us read a
file of the host.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from pathlib import Path

from ocitool.bundle.spec import DEFAULT_PATH, default_spec
from ocitool.errors import OcitoolError
from ocitool.log import get_logger

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from typing import Any

log = get_logger(__name__)

ANNOTATION_PREFIX = "org.opencontainers.image."
# Image config fields whose value becomes the annotation ANNOTATION_PREFIX + field.
IMPLICIT_FIELDS = ("os", "architecture", "variant", "os.version", "os.features",
                   "author", "created")
MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel, so it is not an id
MAX_SYMLINKS = 40   # as the kernel's MAXSYMLINKS


def runtime_config(image_config: dict[str, Any], rootfs: Path, *, rootless: bool,
                   annotations_source: dict[str, str] | None = None) -> dict[str, Any]:
    """The config.json for running ``image_config`` (a whole image config blob) from ``rootfs``.

    ``rootfs`` is the bundle's unpacked root filesystem (``root.path`` is its name, so it
    must sit directly in the bundle). ``annotations_source`` holds annotations the caller
    carries over from the manifest or index; the image's implicit annotations override
    them and its Labels override both. With ``rootless`` the image's user is still the
    process's user, as seen inside the container's user namespace.
    """
    _check_os(image_config.get("os"))
    config = image_config.get("config") or {}
    if not isinstance(config, dict):
        raise OcitoolError("image config is malformed: 'config' is not an object")
    spec = default_spec(rootless)
    spec["root"]["path"] = rootfs.name
    process = spec["process"]
    process["args"] = _strings(config, "Entrypoint") + _strings(config, "Cmd")
    process["env"] = _env(_strings(config, "Env"))
    process["cwd"] = _cwd(_field_text(config, "WorkingDir"))
    process["user"] = _user(*resolve_user(rootfs, _field_text(config, "User")))
    annotations = _annotations(image_config, config, annotations_source or {})
    if annotations:
        spec["annotations"] = annotations
    _note_volumes(config.get("Volumes"))
    return spec


def resolve_user(rootfs: Path, user: str) -> tuple[int, int, list[int]]:
    """(uid, gid, additional gids) for an image-config style ``user`` in ``rootfs``.

    ``user`` is ``""`` (root), ``name``, ``uid``, or either followed by ``:group`` or
    ``:gid``. Numeric ids are taken as they are; a uid without a passwd entry gets gid 0.
    Names are looked up in the rootfs's ``/etc/passwd`` and ``/etc/group``. Additional
    gids come from the group file's member lists, and only for a user name given without
    a group (conversion.md: numeric users and explicit groups keep none).
    """
    if not user:
        return 0, 0, []
    name, has_group, group = user.partition(":")
    if not name or (has_group and not group) or ":" in group:
        raise OcitoolError(f"invalid user {user!r}: use NAME, UID, NAME:GROUP or UID:GID")
    uid, gid = _parse_id(name, user), _parse_id(group, user) if group else None
    numeric_user = uid is not None
    account = None
    if not numeric_user or not group:
        account = _find(_read_etc_file(rootfs, "/etc/passwd"), name, uid)
    if uid is None:
        if account is None:
            raise OcitoolError(f"user {name!r} not found in the image's /etc/passwd")
        uid = int(account[2])
    if group:
        return uid, _group_id(rootfs, group) if gid is None else gid, []
    gid = int(account[3]) if account is not None else 0
    return uid, gid, [] if numeric_user else _memberships(rootfs, name)


def _check_os(image_os: Any) -> None:
    if image_os not in (None, "", "linux"):
        raise OcitoolError(f"image is for the {image_os!r} OS; only linux images can be run")


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise OcitoolError(f"image config is malformed: {field} is not a string")
    return value


def _field_text(config: dict[str, Any], field: str) -> str:
    """A string field of the image config; "" when absent or null."""
    value = config.get(field)
    return "" if value is None else _text(value, field)


def _strings(config: dict[str, Any], field: str) -> list[str]:
    value = config.get(field) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise OcitoolError(f"image config is malformed: {field} is not a list of strings")
    return list(value)


def _env(env: list[str]) -> list[str]:
    """The image's Env as it is, plus the default PATH when it sets none."""
    for entry in env:
        name, equals, _ = entry.partition("=")
        if not name or not equals:
            raise OcitoolError(f"image config is malformed: Env entry {entry!r} is not NAME=VALUE")
    if not any(entry.startswith("PATH=") for entry in env):
        env.append(f"PATH={DEFAULT_PATH}")
    return env


def _cwd(working_dir: str) -> str:
    """WorkingDir ("/" if unset), made absolute as runtime-spec requires by anchoring it at "/"."""
    return working_dir if working_dir.startswith("/") else "/" + working_dir


def _user(uid: int, gid: int, additional_gids: list[int]) -> dict[str, Any]:
    user: dict[str, Any] = {"uid": uid, "gid": gid}
    if additional_gids:
        user["additionalGids"] = additional_gids
    return user


def _annotations(image_config: dict[str, Any], config: dict[str, Any],
                 carried: dict[str, str]) -> dict[str, str]:
    """Carried-over annotations, then the implicit ones, then Labels: later ones win."""
    annotations = dict(carried)
    for field in IMPLICIT_FIELDS:
        value = image_config.get(field)
        if value:
            annotations[ANNOTATION_PREFIX + field] = (
                ",".join(_strings(image_config, field)) if isinstance(value, list)
                else _text(value, field))
    if config.get("StopSignal"):
        annotations[ANNOTATION_PREFIX + "stopSignal"] = _text(config["StopSignal"], "StopSignal")
    ports = config.get("ExposedPorts") or {}
    if not isinstance(ports, dict):
        raise OcitoolError("image config is malformed: ExposedPorts is not an object")
    if ports:
        annotations[ANNOTATION_PREFIX + "exposedPorts"] = ",".join(sorted(ports))
    labels = config.get("Labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise OcitoolError("image config is malformed: Labels is not an object of strings")
    annotations.update(labels)
    return annotations


def _note_volumes(volumes: Any) -> None:
    """Tell the user that Volumes are not mounted (conversion.md makes them optional)."""
    if isinstance(volumes, dict) and volumes:
        log.info("image volumes %s are not mounted; data written there stays in the rootfs",
                 ", ".join(sorted(volumes)))


def _parse_id(text: str, user: str) -> int | None:
    """``text`` as a uid/gid if it is numeric, else None (it is a name)."""
    if not _is_number(text):
        return None
    value = int(text)
    if value > MAX_ID:
        raise OcitoolError(f"invalid user {user!r}: id {text} is out of range")
    return value


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _find(records: list[list[str]], name: str, number: int | None) -> list[str] | None:
    """The first record named ``name`` or, when ``number`` is given, with that id."""
    for record in records:
        if (record[0] == name) if number is None else (int(record[2]) == number):
            return record
    return None


def _group_id(rootfs: Path, group: str) -> int:
    record = _find(_read_etc_file(rootfs, "/etc/group"), group, None)
    if record is None:
        raise OcitoolError(f"group {group!r} not found in the image's /etc/group")
    return int(record[2])


def _memberships(rootfs: Path, name: str) -> list[int]:
    """Gids of the groups whose member list names ``name``, in file order, once each."""
    gids: list[int] = []
    for record in _read_etc_file(rootfs, "/etc/group"):
        members = record[3].split(",") if len(record) > 3 else []
        if name in members and int(record[2]) not in gids:
            gids.append(int(record[2]))
    return gids


def _read_etc_file(rootfs: Path, path: str) -> list[list[str]]:
    """The usable colon-separated records of the rootfs's ``path`` (none if it is absent).

    A record is usable when it has a name and numeric ids where they belong (uid and gid
    for passwd, gid for group); others are skipped, as libc does.
    """
    id_count = 2 if path == "/etc/passwd" else 1  # uid and gid, or gid
    records = []
    for line in _read_in_root(rootfs, path).splitlines():
        fields = line.split(":")
        ids = fields[2:2 + id_count]
        if (fields[0] and not fields[0].startswith("#") and len(ids) == id_count
                and all(_is_number(value) for value in ids)):
            records.append(fields)
    return records


def _read_in_root(rootfs: Path, path: str) -> str:
    """The text of ``path`` inside ``rootfs``, resolved as if ``rootfs`` were "/"; "" if absent."""
    try:
        root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise OcitoolError(f"cannot open root filesystem {rootfs}: {exc.strerror}") from exc
    try:
        fd = _open_in_root(root_fd, path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return ""
    except OSError as exc:
        raise OcitoolError(f"cannot read {path} in the image: {exc.strerror}") from exc
    finally:
        os.close(root_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OcitoolError(f"cannot read {path} in the image: not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read().decode("utf-8", "replace")
    finally:
        os.close(fd)


def _open_in_root(root_fd: int, path: str, flags: int) -> int:
    """Open ``path`` with ``flags`` as if the directory ``root_fd`` were "/".

    Symlinks are resolved by hand, relative to that root, and ``..`` stops at it, so
    nothing outside can be reached; every step is opened with O_NOFOLLOW, so a symlink
    swapped in meanwhile makes the open fail rather than escape. Raises OSError.
    """
    pending = deque(_components(path))
    dirs: list[int] = []  # open directories below the root, innermost last
    links = 0
    try:
        while pending:
            name = pending.popleft()
            here = dirs[-1] if dirs else root_fd
            if name == "..":
                if dirs:
                    os.close(dirs.pop())
                continue
            target = _readlink(name, here)
            if target is None:
                if not pending:
                    return os.open(name, flags | os.O_NOFOLLOW, dir_fd=here)
                dirs.append(os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW
                                    | os.O_CLOEXEC, dir_fd=here))
                continue
            links += 1
            if links > MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            if target.startswith("/"):
                while dirs:
                    os.close(dirs.pop())
            pending.extendleft(reversed(_components(target)))
        return os.open(".", flags, dir_fd=dirs[-1] if dirs else root_fd)
    finally:
        for fd in dirs:
            os.close(fd)


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def _readlink(name: str, dir_fd: int) -> str | None:
    """The target of the symlink ``name`` in ``dir_fd``, or None if it is not a symlink."""
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return None
        raise
