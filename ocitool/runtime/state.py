"""Container state on disk: ``<statedir>/<id>/state.json`` and the status it implies.

The state directory also holds ``exec.fifo``, the rendezvous between ``create`` and
``start``: it exists from create until start, so "created" means the fifo is there and
the init process is alive. A process is identified by its pid *and* its start time, so a
recycled pid is never mistaken for the container.
"""

from __future__ import annotations

import os

from ocitool import cjson
from ocitool.errors import OcitoolError
from ocitool.fsutil import atomic_write, remove_tree

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from typing import Any

OCI_VERSION = "1.0.2"
STATE_FILE = "state.json"
EXEC_FIFO = "exec.fifo"
_ID_PUNCTUATION = "_+.-"


class ContainerNotFound(OcitoolError):
    """No container with that id in the state directory."""


class ContainerState:
    """What the runtime remembers of a container between commands."""

    __slots__ = ("id", "bundle", "pid", "pid_start_time", "created", "annotations", "rootless", "cgroup")

    def __init__(self, id: str, bundle: str, pid: int = 0, pid_start_time: int = 0, created: str = "",
                 annotations: dict[str, str] | None = None, rootless: bool = False,
                 cgroup: dict[str, Any] | None = None) -> None:
        self.id = id
        self.bundle = bundle
        self.pid = pid
        self.pid_start_time = pid_start_time
        self.created = created
        self.annotations: dict[str, str] = {} if annotations is None else annotations
        self.rootless = rootless
        self.cgroup: dict[str, Any] = {} if cgroup is None else cgroup

    def to_dict(self) -> dict[str, Any]:
        """The fields as state.json holds them (what ``ContainerState(**document)`` reads back)."""
        return {name: getattr(self, name) for name in self.__slots__}

    def oci_state(self, status: str) -> dict[str, Any]:
        """The runtime-spec state document (what ``state`` prints and hooks read on stdin)."""
        document: dict[str, Any] = {"ociVersion": OCI_VERSION, "id": self.id, "status": status,
                                    "bundle": self.bundle}
        if status in ("created", "running", "creating"):
            document["pid"] = self.pid
        if self.annotations:
            document["annotations"] = self.annotations
        return document


def default_state_root() -> str:
    """``/run/ocitool-runtime`` for root, ``$XDG_RUNTIME_DIR/ocitool-runtime`` otherwise."""
    if os.geteuid() == 0:
        return "/run/ocitool-runtime"
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/ocitool-runtime-{os.geteuid()}"
    return os.path.join(runtime_dir, "ocitool-runtime")


def validate_id(container_id: str) -> str:
    """Container ids are path components: letters, digits and ``_+.-``, not ``.`` or ``..``."""
    if not container_id or container_id in (".", "..") or \
            not all(char.isalnum() or char in _ID_PUNCTUATION for char in container_id):
        raise OcitoolError(f"invalid container id {container_id!r}: use letters, digits and _+.-")
    return container_id


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as file:
            stat = file.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[19]) if fields[0] != "Z" else None


class StateStore:
    """The state directory: one subdirectory per container, and ``.seccomp-cache`` with the
    seccomp programs compiled for them (see :mod:`ocitool.runtime.seccomp`).

    Paths are plain strings in the runtime: ``pathlib`` (with the ``urllib.parse`` and
    ``ipaddress`` it imports) would add ~5 ms to every runtime command.
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = os.fspath(root)
        self.seccomp_cache = os.path.join(self.root, ".seccomp-cache")

    def directory(self, container_id: str) -> str:
        return os.path.join(self.root, validate_id(container_id))

    def reserve(self, container_id: str) -> str:
        """Create the container's directory; fail if the id is taken."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        directory = self.directory(container_id)
        try:
            os.mkdir(directory, mode=0o700)
        except FileExistsError:
            raise OcitoolError(f"container {container_id} already exists") from None
        return directory

    def save(self, state: ContainerState) -> None:
        """Write state.json atomically."""
        atomic_write(os.path.join(self.directory(state.id), STATE_FILE),
                     cjson.dumps(state.to_dict()).encode(), 0o600,
                     durable=False)  # /run is a tmpfs; a rename is all a reader needs

    def load(self, container_id: str) -> ContainerState:
        path = os.path.join(self.directory(container_id), STATE_FILE)
        try:
            with open(path, "rb") as file:
                return ContainerState(**cjson.loads(file.read()))
        except FileNotFoundError:
            raise ContainerNotFound(f"container {container_id} does not exist") from None
        except (ValueError, TypeError) as exc:
            raise OcitoolError(f"state of container {container_id} is corrupt ({path}): {exc}") from None

    def remove(self, container_id: str) -> None:
        remove_tree(self.directory(container_id))

    def ids(self) -> list[str]:
        """Ids of every container with a complete state file."""
        try:
            names = os.listdir(self.root)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(name for name in names if os.path.isfile(os.path.join(self.root, name, STATE_FILE)))

    def status(self, state: ContainerState) -> str:
        """created, running or stopped, from the init process and the exec fifo."""
        if not state.pid or process_start_time(state.pid) != state.pid_start_time:
            return "stopped"
        if os.path.exists(os.path.join(self.directory(state.id), EXEC_FIFO)):
            return "created"
        return "running"
