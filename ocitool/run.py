"""``ocitool run``: pull, unpack once into a shared cache, run with a private writable layer.

This module sits above the three stages and chains them through their APIs:
- the image is made present per ``--pull`` (image stage);
- meanwhile, on a root's first run, a child process compiles Docker's seccomp profile into the
  runtime's cache, which would otherwise keep the container waiting ~15 ms, and a thread loads
  the extraction code;
- it is unpacked once into ``<root>/rootfs/<manifest hex>`` (bundle stage), under a lock, and
  the cache entry is used only once complete (unpack renames it into place at the end);
- each run gets ``<root>/containers/<id>/`` with an overlayfs upper layer on the cached rootfs,
  mounted in a private mount namespace of this process (so no mount outlives it, even when it
  is killed), and is run in the foreground by the runtime stage.
As non-root, this process first enters a user namespace of its own, mapping the caller to
root, so the overlay mount and the container's namespaces need no privilege.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from pathlib import Path

from ocitool.bundle.convert import resolve_user, runtime_config
from ocitool.bundle.spec import DEFAULT_CAPABILITIES
from ocitool.errors import OcitoolError
from ocitool.fsutil import atomic_write, remove_tree
from ocitool.image.inspect import load_local
from ocitool.runtime import container, seccomp, syscalls
from ocitool.runtime.capabilities import CAPABILITIES
from ocitool.runtime.state import ContainerState, StateStore, process_start_time, validate_id
from ocitool.log import get_logger

TYPE_CHECKING = False  # type checkers treat this as True; these imports serve annotations only
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable
    from typing import Any

    from ocitool.image.store import ImageStore

log = get_logger(__name__)
RECORD = "run.json"
_SIZE_SUFFIXES = {"b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


class RunOptions:
    """``ocitool run``'s flags, as Docker defines them (lists default to new empty ones)."""

    __slots__ = ("command", "entrypoint", "env", "env_files", "workdir", "user", "volumes", "read_only",
                 "hostname", "network", "memory", "pids_limit", "cpus", "cap_add", "cap_drop", "tty",
                 "interactive", "name", "remove")

    def __init__(self, command: list[str] | None = None, entrypoint: str | None = None,
                 env: list[str] | None = None, env_files: list[str] | None = None, workdir: str | None = None,
                 user: str | None = None, volumes: list[str] | None = None, read_only: bool = False,
                 hostname: str | None = None, network: str = "host", memory: int | None = None,
                 pids_limit: int | None = None, cpus: float | None = None, cap_add: list[str] | None = None,
                 cap_drop: list[str] | None = None, tty: bool = False, interactive: bool = False,
                 name: str | None = None, remove: bool = False):
        self.command = [] if command is None else command
        self.entrypoint = entrypoint
        self.env = [] if env is None else env
        self.env_files = [] if env_files is None else env_files
        self.workdir = workdir
        self.user = user
        self.volumes = [] if volumes is None else volumes
        self.read_only = read_only
        self.hostname = hostname
        self.network = network
        self.memory = memory
        self.pids_limit = pids_limit
        self.cpus = cpus
        self.cap_add = [] if cap_add is None else cap_add
        self.cap_drop = [] if cap_drop is None else cap_drop
        self.tty = tty
        self.interactive = interactive
        self.name = name
        self.remove = remove


def parse_bytes(text: str) -> int:
    """``64m`` -> 67108864 (Docker's -m units: b, k, m, g)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([bkmg]?)", text.strip().lower())
    if not match or float(match[1]) <= 0:
        raise OcitoolError(f"invalid size {text!r}: use a number with an optional b, k, m or g")
    return int(float(match[1]) * _SIZE_SUFFIXES[match[2] or "b"])


def run_image(root: Path, get_image: Callable[[], tuple[ImageStore, str]], options: RunOptions) -> int:
    """Run an image as a container in the foreground and return its exit code.

    ``get_image`` makes the image present (pulling it if need be) and says where it is: a store
    and the ref name in it.
    """
    rootless = os.geteuid() != 0
    clean_up_abandoned_runs(root)
    filter_build = None if rootless else _start_filter_build(root, options)
    first_unpack = not (root / "rootfs").is_dir()
    loader = _import_meanwhile("ocitool.bundle.unpack", "ocitool.runtime.init") if first_unpack else None
    try:
        store, name = get_image()
        image = load_local(store, name)
        cached = cached_bundle(root, store, name, image.descriptor["digest"], rootless)
    finally:
        if loader is not None:
            loader.join()  # the container is cloned from a single-threaded process (see cgroups.Entry)
        if filter_build is not None:
            os.waitpid(filter_build, 0)
    container_id = validate_id(options.name) if options.name else os.urandom(6).hex()
    run_dir = _reserve_run(root, container_id)
    try:
        _write_record(run_dir, {"id": container_id, "image": name, "digest": image.descriptor["digest"],
                                "command": options.command, "created": _now(), "status": "created",
                                "remove": options.remove, "owner": _owner()}, durable=not options.remove)
        spec = build_spec(image.config, cached / "rootfs", options, rootless, container_id)
        _enter_private_namespaces(rootless)
        bundle = _prepare_bundle(run_dir, cached / "rootfs", spec, volatile=options.remove)
        if not options.interactive:
            _close_stdin()
        code = container.run(StateStore(root / "runtime"), container_id,
                             container.CreateOptions(bundle=bundle), detach=False,
                             on_created=_lo_up if options.network == "none" else lambda state: None)
    except BaseException:
        _finish(run_dir, None, remove=True)
        raise
    _finish(run_dir, code, remove=options.remove)
    return code


def cached_bundle(root: Path, store: ImageStore, name: str, digest: str, rootless: bool) -> Path:
    """The unpacked image for ``digest``, unpacking it first if no complete entry exists yet.

    unpack renames an entry into place only once it is complete, so an entry with a
    config.json is used as it is, without taking the lock.
    """
    cache = root / "rootfs"
    entry = cache / digest.replace(":", "_")
    if (entry / "config.json").is_file():
        return entry
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{entry.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one unpack per image, however many runs start at once
        if not (entry / "config.json").is_file():
            from ocitool.bundle.unpack import unpack  # a warm run never needs the extraction code
            log.info("unpacking %s into the rootfs cache %s", name, entry)
            unpack(store, name, entry, rootless=rootless)
    return entry


def build_spec(image_config: dict[str, Any], rootfs: Path, options: RunOptions, rootless: bool,
               container_id: str) -> dict[str, Any]:
    """config.json for this run: the image's conversion with Docker's run flags applied."""
    spec = runtime_config(image_config, rootfs, rootless=rootless)
    container_config = image_config.get("config") or {}
    process = spec["process"]
    process["args"] = _command(container_config, options)
    process["env"] = _environment(process["env"], options)
    process["terminal"] = options.tty
    if options.tty:
        process["env"].append("TERM=xterm")
    if options.workdir:
        process["cwd"] = options.workdir if options.workdir.startswith("/") else "/" + options.workdir
    if options.user:
        uid, gid, groups = resolve_user(rootfs, options.user)
        process["user"] = {"uid": uid, "gid": gid, **({"additionalGids": groups} if groups else {})}
    _apply_capabilities(process, options)
    spec["hostname"] = options.hostname or container_id[:12]
    spec["root"] = {"path": "rootfs", "readonly": options.read_only}
    spec["mounts"] += [_volume(volume) for volume in options.volumes]
    _apply_linux(spec, options, rootless)
    return spec


def _command(container_config: dict[str, Any], options: RunOptions) -> list[str]:
    if options.entrypoint is not None:
        entrypoint = [options.entrypoint] if options.entrypoint else []
    else:
        entrypoint = list(container_config.get("Entrypoint") or [])
    # Docker: a new entrypoint drops the image's Cmd; a command replaces it.
    command = options.command or ([] if options.entrypoint is not None else list(container_config.get("Cmd") or []))
    args = entrypoint + command
    if not args:
        raise OcitoolError("the image has no command: give one after the image name")
    return args


def _environment(image_env: list[str], options: RunOptions) -> list[str]:
    """Image env, then --env-file lines, then -e (later wins; a bare NAME takes our value)."""
    merged = dict(item.split("=", 1) for item in image_env)
    for item in _env_file_lines(options.env_files) + options.env:
        key, sep, value = item.partition("=")
        if not key:
            raise OcitoolError(f"invalid environment variable {item!r}")
        if sep:
            merged[key] = value
        elif key in os.environ:
            merged[key] = os.environ[key]
    return [f"{key}={value}" for key, value in merged.items()]


def _env_file_lines(paths: list[str]) -> list[str]:
    lines = []
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise OcitoolError(f"cannot read env file {path}: {exc.strerror}") from None
        lines += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return lines


def _apply_capabilities(process: dict[str, Any], options: RunOptions) -> None:
    for name in options.cap_add + options.cap_drop:
        if name.upper() != "ALL" and _cap_name(name) not in CAPABILITIES:
            raise OcitoolError(f"unknown capability {name!r}")
    caps = process.get("capabilities") or {}
    for kind in ("bounding", "effective", "permitted"):
        current = set(caps.get(kind, []))
        if any(n.upper() == "ALL" for n in options.cap_add):
            current = set(CAPABILITIES)
        current |= {_cap_name(n) for n in options.cap_add if n.upper() != "ALL"}
        if any(n.upper() == "ALL" for n in options.cap_drop):
            current = {_cap_name(n) for n in options.cap_add if n.upper() != "ALL"}
        current -= {_cap_name(n) for n in options.cap_drop if n.upper() != "ALL"}
        caps[kind] = sorted(current)
    process["capabilities"] = caps


def _cap_name(name: str) -> str:
    upper = name.upper()
    return upper if upper.startswith("CAP_") else "CAP_" + upper


def _volume(text: str) -> dict[str, Any]:
    """``-v SRC:DST[:ro|rw]`` as a bind mount."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/") or \
            (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise OcitoolError(f"invalid volume {text!r}: use -v /host/path:/container/path[:ro]")
    source = Path(parts[0]).absolute()
    if not source.exists():
        raise OcitoolError(f"volume source {source} does not exist")
    options = ["rbind", "ro" if len(parts) == 3 and parts[2] == "ro" else "rw"]
    return {"destination": parts[1], "type": "bind", "source": str(source), "options": options}


def _apply_linux(spec: dict[str, Any], options: RunOptions, rootless: bool) -> None:
    linux = spec.setdefault("linux", {})
    namespaces = [ns for ns in linux.get("namespaces", []) if ns["type"] not in ("network", "user")]
    if options.network == "none":
        namespaces.append({"type": "network"})
    elif options.network != "host":
        raise OcitoolError(f"--network {options.network}: use host or none")
    linux["namespaces"] = namespaces
    linux.pop("uidMappings", None)  # as non-root, this process is already in our own user namespace
    linux.pop("gidMappings", None)
    resources = linux.setdefault("resources", {})
    if options.memory:
        resources["memory"] = {"limit": options.memory, "swap": options.memory}
    if options.pids_limit:
        resources["pids"] = {"limit": options.pids_limit}
    if options.cpus:
        resources["cpu"] = {"quota": int(options.cpus * 100000), "period": 100000}
    if not rootless:
        linux["seccomp"] = _docker_profile(spec["process"])
    elif any(resources.values()):
        log.warning("resource limits need root (or a delegated cgroup) and are ignored when rootless")


def _docker_profile(process: dict[str, Any]) -> dict[str, Any]:
    """Docker's seccomp profile for a process with these capabilities."""
    return seccomp.default_profile({CAPABILITIES[name] for name in process["capabilities"].get("bounding", [])})


def _start_filter_build(root: Path, options: RunOptions) -> int | None:
    """On a root's first run, fork a child that compiles this run's seccomp profile into the runtime's
    cache while this process gets the image; return its pid (None when there is a cache already).

    The runtime then finds the program in its cache. Should the profile differ (a later run
    with other ``--cap-add``/``--cap-drop``), the runtime compiles it itself, as on any miss.
    """
    cache = StateStore(root / "runtime").seccomp_cache
    if os.path.isdir(cache):
        return None
    process: dict[str, Any] = {"capabilities": {kind: list(DEFAULT_CAPABILITIES)
                                                for kind in ("bounding", "effective", "permitted")}}
    _apply_capabilities(process, options)
    profile = _docker_profile(process)
    pid = os.fork()
    if pid == 0:  # the child: build, store, leave without running anything of the parent's
        code = 1
        try:
            seccomp.compile_filter(profile, cache)
            code = 0
        finally:
            os._exit(code)
    return pid


def _import_meanwhile(*modules: str) -> threading.Thread:
    """Import ``modules`` on a thread while this one fetches the image, mostly waiting on the network:
    a root's first run is sure to unpack, then start a container. A failure is left for the import
    that needs the module."""
    import threading  # not on a warm run's path

    def load() -> None:
        for module in modules:
            with contextlib.suppress(Exception):
                __import__(module)

    thread = threading.Thread(target=load, name="import meanwhile")
    thread.start()
    return thread


def _reserve_run(root: Path, container_id: str) -> Path:
    run_dir = root / "containers" / container_id
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        run_dir.mkdir()
    except FileExistsError:
        raise OcitoolError(f"a container named {container_id} already exists (see 'ocitool ps', "
                           f"remove it with 'ocitool rm {container_id}')") from None
    return run_dir


def _enter_private_namespaces(rootless: bool) -> None:
    """A mount namespace of our own (and, as non-root, a user namespace mapping us to root)."""
    uid, gid = os.geteuid(), os.getegid()
    syscalls.unshare(syscalls.CLONE_NEWNS | (syscalls.CLONE_NEWUSER if rootless else 0))
    if rootless:
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
        Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)


def _prepare_bundle(run_dir: Path, lower: Path, spec: dict[str, Any], volatile: bool) -> Path:
    """bundle/rootfs: an overlay of the cached rootfs (or, where overlayfs is refused, a copy).

    A layer thrown away at exit (``--rm``) is ``volatile``: no syncs, so unmounting it does
    not wait for every dirty page of the disk it lives on (podman does the same). config.json
    is not synced either, nor indented (json's C encoder only writes compact JSON, ~0.3 ms
    faster with Docker's seccomp profile): it serves this run only, and no run outlives a reboot.
    """
    bundle = run_dir / "bundle"
    rootfs = bundle / "rootfs"
    for directory in (rootfs, run_dir / "upper", run_dir / "work"):
        directory.mkdir(parents=True)
    data = f"lowerdir={lower},upperdir={run_dir / 'upper'},workdir={run_dir / 'work'}"
    data += ",volatile" if volatile else ""
    try:
        syscalls.mount("overlay", str(rootfs), "overlay", 0, data)
    except OSError as exc:
        log.info("overlayfs unavailable (%s); copying the image's rootfs for this run", exc.strerror)
        rootfs.rmdir()
        import shutil  # only this fallback needs it
        shutil.copytree(lower, rootfs, symlinks=True)
    atomic_write(bundle / "config.json", json.dumps(spec).encode(), durable=False)  # compact: C-encoded
    return bundle


def _close_stdin() -> None:
    """Without -i the container reads end-of-file, as with Docker."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)


def _lo_up(state: ContainerState) -> None:
    """Bring up ``lo`` in the container's fresh network namespace (--network none)."""
    import socket  # with struct, only --network none needs it
    import struct
    pid = os.fork()
    if pid == 0:
        try:
            with open(f"/proc/{state.pid}/ns/net") as namespace:
                syscalls.setns(namespace.fileno(), syscalls.CLONE_NEWNET)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                request = struct.pack("16sH", b"lo", 0)
                flags = struct.unpack("16sH", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
                fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | _IFF_UP))
            os._exit(0)
        except BaseException:  # noqa: BLE001
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise OcitoolError("cannot bring up the loopback interface of the container's network namespace")


def _finish(run_dir: Path, code: int | None, remove: bool) -> None:
    """Unmount the run's layer; remove the run (``--rm`` or a failed start) or record how it ended."""
    with contextlib.suppress(OSError):
        syscalls.umount2(str(run_dir / "bundle" / "rootfs"), syscalls.MNT_DETACH)
    if remove:
        remove_tree(run_dir)
        return
    record = read_record(run_dir)
    record.update(status="exited", exit_code=code, finished=_now())
    _write_record(run_dir, record)


def _write_record(run_dir: Path, record: dict[str, Any], durable: bool = True) -> None:
    """Replace the run's record, synced first when ``durable`` (not needed for a ``--rm`` run:
    nothing else of it is meant to survive a crash, its overlay layer is volatile too)."""
    atomic_write(run_dir / RECORD, json.dumps(record, indent=2).encode(), durable=durable)


def read_record(run_dir: Path) -> dict[str, Any]:
    """A run's record (id, image, command, created, status, exit_code)."""
    try:
        return json.loads((run_dir / RECORD).read_text())
    except (OSError, ValueError):
        return {"id": run_dir.name, "image": "?", "command": [], "created": "", "status": "unknown"}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())  # datetime's isoformat, without datetime


def _owner() -> list[int]:
    """This ocitool process, as (pid, start time): a run whose owner is gone was abandoned."""
    return [os.getpid(), process_start_time(os.getpid()) or 0]


def clean_up_abandoned_runs(root: Path) -> None:
    """Finish runs whose ocitool was killed (SIGKILL leaves no chance to clean up): delete their
    runtime state and cgroup, and remove the run if it was started with --rm."""
    directory = root / "containers"
    if not directory.is_dir():
        return
    runtime = StateStore(root / "runtime")
    for run_dir in directory.iterdir():
        record = read_record(run_dir)
        pid, started = record.get("owner") or [0, 0]
        if record.get("status") != "created" or (pid and process_start_time(pid) == started):
            continue  # finished already, or its ocitool is still running it
        if run_dir.name in runtime.ids():
            container.delete(runtime, run_dir.name, force=True)
        if record.get("remove"):
            remove_tree(run_dir)
        else:
            record.update(status="exited", exit_code=None, finished=_now())
            _write_record(run_dir, record)


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Records of the runs kept under ``<root>/containers`` (runs without --rm), newest first."""
    directory = root / "containers"
    if not directory.is_dir():
        return []
    runtime = StateStore(root / "runtime")
    records = []
    for run_dir in directory.iterdir():
        record = read_record(run_dir)
        if record.get("status") == "created" and run_dir.name in runtime.ids():
            record["status"] = runtime.status(runtime.load(run_dir.name))
        records.append(record)
    return sorted(records, key=lambda r: r.get("created", ""), reverse=True)


def remove_run(root: Path, container_id: str, force: bool = False) -> None:
    """Remove a finished run (with ``force``, stop a running one first)."""
    run_dir = root / "containers" / validate_id(container_id)
    if not run_dir.is_dir():
        raise OcitoolError(f"no container {container_id} (see 'ocitool ps')")
    runtime = StateStore(root / "runtime")
    if container_id in runtime.ids():
        if runtime.status(runtime.load(container_id)) == "running" and not force:
            raise OcitoolError(f"container {container_id} is running: stop it or use --force")
        container.delete(runtime, container_id, force=True)
    remove_tree(run_dir)


def prune_runs(root: Path) -> list[str]:
    """Remove every run that is not running; return their ids."""
    clean_up_abandoned_runs(root)
    removed = []
    for record in list_runs(root):
        if record.get("status") != "running":
            remove_run(root, record["id"], force=True)
            removed.append(record["id"])
    return removed
