"""Container lifecycle on the runtime side: create, start, run, kill, delete, exec, ps.

Each operation is a function over a :class:`StateStore`; the CLI only parses flags and
calls them. ``create`` forks the init (see :mod:`ocitool.runtime.init`), drives it
through the channel, and on any failure removes what it made: the init, the cgroup and
the state directory.
"""

from __future__ import annotations

import os
import _signal  # the C module: signal.py builds enums at import (~2 ms of a runtime command)
import time

from ocitool.errors import OcitoolError
from ocitool.fsutil import atomic_write
from ocitool.runtime import cgroups, hooks, namespaces, syscalls
from ocitool.runtime.process import PreparedProcess, prepare_process
from ocitool.runtime.channel import Channel
from ocitool.runtime.spec import load_spec, validate_process
from ocitool.runtime.state import EXEC_FIFO, ContainerState, StateStore, process_start_time
from ocitool.log import get_logger, utc_timestamp

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

STOP_WAIT = 10.0
log = get_logger(__name__)
FORWARDED_SIGNALS = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1,
                     _signal.SIGUSR2, _signal.SIGCONT)


class ProcessOptions:
    """Flags shared by create/run/exec: where the pty goes and what else is passed on.

    ``foreground`` (run/exec without --detach) keeps the pty master to relay it.
    """

    def __init__(self, pid_file: str | None = None, console_socket: str | None = None, preserve_fds: int = 0,
                 foreground: bool = False) -> None:
        self.pid_file = pid_file
        self.console_socket = console_socket
        self.preserve_fds = preserve_fds
        self.foreground = foreground


class CreateOptions(ProcessOptions):
    """runc's create/run flags."""

    def __init__(self, bundle: str | os.PathLike[str] = ".", no_pivot: bool = False, systemd_cgroup: bool = False,
                 **process_options: Any) -> None:
        super().__init__(**process_options)
        self.bundle = bundle
        self.no_pivot = no_pivot
        self.systemd_cgroup = systemd_cgroup


def create(store: StateStore, container_id: str, options: CreateOptions) -> tuple[ContainerState, int | None]:
    """Set up the container and leave its init waiting for ``start``; return it and its pty master."""
    bundle = os.path.abspath(options.bundle)
    return _create(store, container_id, options, bundle, load_spec(bundle))


def _create(store: StateStore, container_id: str, options: CreateOptions, bundle: str,
            spec: dict[str, Any]) -> tuple[ContainerState, int | None]:
    _check_console(spec["process"], options)
    prepared = _prepare(spec, store)
    directory = store.reserve(container_id)
    rootless = os.geteuid() != 0 or namespaces.in_user_namespace()
    state = ContainerState(id=container_id, bundle=bundle, rootless=rootless,
                           created=utc_timestamp(),
                           annotations=spec.get("annotations") or {})
    linux = spec.get("linux") or {}
    manager = cgroups.cgroup_manager(container_id, linux, rootless=state.rootless, systemd=options.systemd_cgroup)
    master = None
    try:
        fifo = os.path.join(directory, EXEC_FIFO)
        os.mkfifo(fifo, 0o600)
        manager.create()
        manager.apply(_with_default_devices(linux))
        state.cgroup = manager.to_state()
        new_userns = any(ns.type == "user" and not ns.path for ns in namespaces.parse_namespaces(linux))
        from ocitool.runtime import init  # before the fork: a forked child's imports copy the pages they touch
        init_options = init.InitOptions(bundle, fifo, options.no_pivot, options.preserve_fds, options.foreground)
        channel, state.pid = _spawn(manager, lambda ch, join: init.run_stage_one(ch, join, spec, prepared,
                                                                                 init_options),
                                    linux if new_userns else None)
        try:
            state.pid_start_time = process_start_time(state.pid) or 0
            master = _finish_create(channel, spec, state, options)
        finally:
            channel.close()
        store.save(state)
        _write_pid_file(options.pid_file, state.pid)
    except BaseException:
        _stop(state.pid)
        manager.destroy()
        store.remove(container_id)
        raise
    return state, master


# What every container may use whatever its config's device rules say (runc's AllowedDevices).
DEFAULT_DEVICE_RULES = [
    {"allow": True, "type": "c", "access": "m"}, {"allow": True, "type": "b", "access": "m"},
    *({"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
      for major, minor in ((1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (136, -1),
                           (10, 200)))]


def _with_default_devices(linux: dict[str, Any]) -> dict[str, Any] | None:
    """``linux.resources`` with the default device rules and one per ``linux.devices`` node appended."""
    resources = dict(linux.get("resources") or {})
    own = [{"allow": True, "type": d.get("type", "c"), "major": d.get("major"), "minor": d.get("minor"),
            "access": "rwm"} for d in linux.get("devices") or []]
    resources["devices"] = list(resources.get("devices") or []) + DEFAULT_DEVICE_RULES + own
    return resources


def _prepare(spec: dict[str, Any], store: StateStore) -> PreparedProcess:
    """Check what the init would refuse later, so a bad config fails before anything exists,
    and compile the process's seccomp filter for the init."""
    linux = spec.get("linux") or {}
    namespaces.parse_namespaces(linux)
    return prepare_process(spec["process"], linux.get("seccomp"), store.seccomp_cache)


def _check_console(process: dict[str, Any], options: ProcessOptions) -> None:
    if process.get("terminal") and not (options.console_socket or options.foreground):
        raise OcitoolError("process.terminal is true: give --console-socket, or run in the foreground")
    if options.console_socket and not process.get("terminal"):
        raise OcitoolError("--console-socket needs process.terminal to be true")


def _spawn(manager: cgroups.CgroupManager, child: Callable[[Channel, Callable[[], None]], None],
           id_mappings: dict[str, Any] | None) -> tuple[Channel, int]:
    """Fork stage one into the cgroup, map its ids if it made a user namespace, return PID 1's host pid.

    ``child`` gets the channel and the function that moves it into the cgroup, to call first.
    """
    ours, theirs = Channel.pair()
    entry = cgroups.Entry(manager)
    try:
        stage_one = entry.fork()
    except BaseException:
        entry.close()
        ours.close()
        theirs.close()
        raise
    if stage_one == 0:
        try:
            ours.close()
            child(theirs, entry.join)
        finally:
            os._exit(1)  # the child never returns into the runtime's code
    theirs.close()
    try:
        entry.finish(stage_one)
        if id_mappings is not None:
            ours.receive("userns")
            namespaces.write_id_mappings(stage_one, id_mappings.get("uidMappings") or [],
                                         id_mappings.get("gidMappings") or [])
            ours.send("mapped")
        ours.send("go")
        message, _ = ours.receive("pid")
        ours.send("setup")  # PID 1 may talk now: stage one's "pid", received, cannot be overtaken
        os.waitpid(stage_one, 0)  # while PID 1 sets up; reaped before "state", which PID 1 awaits
        # before it asks to die with us: by then it is our child (subreaped), not stage one's
        return ours, message["pid"]
    except BaseException:
        ours.close()
        _stop(stage_one)
        raise


def _finish_create(channel: Channel, spec: dict[str, Any], state: ContainerState,
                   options: CreateOptions) -> int | None:
    """Runtime-namespace hooks, the console, and the init's word that it is ready."""
    channel.receive("mounted")
    creating = state.oci_state("creating")
    hooks.run_hooks(spec, "prestart", creating)
    hooks.run_hooks(spec, "createRuntime", creating)
    channel.send("state", state=creating)
    master = _receive_console(channel, spec["process"], options)
    channel.receive("ready")
    return master


def _receive_console(channel: Channel, process: dict[str, Any], options: ProcessOptions) -> int | None:
    """The pty master: sent on to --console-socket, or returned for a foreground relay."""
    if not process.get("terminal"):
        return None
    from ocitool.runtime import terminal  # with termios, tty and select: only for a terminal
    _, fds = channel.receive("console")
    if options.console_socket:
        try:
            terminal.send_to_console_socket(options.console_socket, fds[0])
        finally:
            os.close(fds[0])
        return None
    return fds[0]


def start(store: StateStore, container_id: str) -> ContainerState:
    """Let a created container's init exec the process; run poststart hooks."""
    state = store.load(container_id)
    _start(store, state, lambda: load_spec(state.bundle))
    return state


def _start(store: StateStore, state: ContainerState, get_spec: Callable[[], dict[str, Any]]) -> None:
    container_id = state.id
    status = store.status(state)
    if status != "created":
        raise OcitoolError(f"container {container_id} is {status}, not created: cannot start it")
    fifo = os.path.join(store.directory(container_id), EXEC_FIFO)
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise OcitoolError(f"container {container_id} is not waiting to start ({exc.strerror})") from None
    os.write(fd, b"0")
    os.close(fd)
    os.unlink(fifo)  # from now on the status is "running"
    hooks.run_hooks(get_spec(), "poststart", state.oci_state("running"), fatal=False)


def run(store: StateStore, container_id: str, options: CreateOptions, detach: bool,
        on_created: Callable[[ContainerState], None] = lambda state: None) -> int:
    """create, ``on_created``, start; in the foreground also wait, forward signals, relay the tty,
    delete, and return the exit code."""
    if not detach:
        syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)  # the init is a grandchild: reap it ourselves
        options.foreground = True
    bundle = os.path.abspath(options.bundle)
    spec = load_spec(bundle)  # read once for create, start and delete
    state, master = _create(store, container_id, options, bundle, spec)
    try:
        on_created(state)
        _start(store, state, lambda: spec)
    except BaseException:
        _delete(store, state, lambda: spec, force=True)
        raise
    if detach:
        return 0
    try:
        code = wait_foreground(state.pid, master)
        if code == 128 + _signal.SIGKILL and cgroups.manager_from_state(state.cgroup).oom_killed():
            log.warning("container %s was killed for exceeding its memory limit", container_id)
        return code
    finally:
        _delete(store, state, lambda: spec, force=True)


def wait_foreground(pid: int, master: int | None) -> int:
    """Wait for ``pid`` (our child by subreaping), forwarding signals and the tty; return its exit code."""
    previous = {sig: _signal.signal(sig, lambda number, _frame: _signal_quietly(pid, number))
                for sig in FORWARDED_SIGNALS}
    try:
        if master is not None:
            from ocitool.runtime import terminal
            terminal.relay(master)
            os.close(master)
        return _wait_exit_code(pid)
    finally:
        for sig, handler in previous.items():
            _signal.signal(sig, handler)


def _wait_exit_code(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return 255
        if os.WIFEXITED(status):
            return os.WEXITSTATUS(status)
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)


def state_of(store: StateStore, container_id: str) -> dict[str, Any]:
    """The runtime-spec state document of a container."""
    state = store.load(container_id)
    return state.oci_state(store.status(state))


def kill(store: StateStore, container_id: str, sig: int, all_processes: bool = False) -> None:
    """Send ``sig`` to the container's init (or, with ``all_processes``, to every process in it)."""
    state = store.load(container_id)
    if store.status(state) == "stopped":
        raise OcitoolError(f"container {container_id} is not running")
    if all_processes:
        cgroups.manager_from_state(state.cgroup).kill_all(sig)
    else:
        os.kill(state.pid, sig)


def delete(store: StateStore, container_id: str, force: bool = False) -> None:
    """Remove a stopped (or, with ``force``, any) container: its processes, cgroup, state; then poststop hooks."""
    state = store.load(container_id)
    _delete(store, state, lambda: load_spec(state.bundle), force)


def _delete(store: StateStore, state: ContainerState, get_spec: Callable[[], dict[str, Any]], force: bool) -> None:
    status = store.status(state)
    if status == "running" and not force:
        raise OcitoolError(f"container {state.id} is running: stop it first or use --force")
    if status != "stopped":
        _stop(state.pid)
    manager = cgroups.manager_from_state(state.cgroup)
    manager.destroy()
    store.remove(state.id)
    try:
        hooks.run_hooks(get_spec(), "poststop", state.oci_state("stopped"), fatal=False)
    except OcitoolError:  # a bundle gone or broken by now: nothing to run the hooks from
        pass


def exec_process(store: StateStore, container_id: str, process: dict[str, Any], options: ProcessOptions,
                 detach: bool) -> int:
    """Run ``process`` inside a running container; return its exit code (0 when detached)."""
    state = store.load(container_id)
    if store.status(state) == "stopped":
        raise OcitoolError(f"container {container_id} is stopped: cannot exec in it")
    validate_process(process, "process")
    spec = load_spec(state.bundle)
    options.foreground = not detach
    _check_console(process, options)
    linux = spec.get("linux") or {}
    kinds = [ns.type for ns in namespaces.parse_namespaces(linux)]
    if not detach:
        syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
    manager = cgroups.manager_from_state(state.cgroup)
    prepared = prepare_process(process, linux.get("seccomp"), store.seccomp_cache)
    from ocitool.runtime import init  # before the fork, as in create
    channel, pid = _spawn(manager, lambda ch, join: init.run_exec(ch, join, state.pid, kinds, prepared,
                                                                  options.preserve_fds), None)
    try:
        master = _receive_console(channel, process, options)
        channel.receive("ready")
    except BaseException:
        _stop(pid)
        raise
    finally:
        channel.close()
    _write_pid_file(options.pid_file, pid)
    return 0 if detach else wait_foreground(pid, master)


def process_for_exec(store: StateStore, container_id: str, args: list[str], *, tty: bool, env: list[str],
                     cwd: str | None, user: str | None, additional_gids: list[int], no_new_privs: bool,
                     caps: list[str]) -> dict[str, Any]:
    """The process ``exec ARGS`` runs: the container's own process settings with the flags applied (as runc)."""
    base = load_spec(store.load(container_id).bundle)["process"]
    process = {key: value for key, value in base.items() if key not in ("args", "terminal", "consoleSize")}
    process.update(args=args, terminal=tty, env=(base.get("env") or []) + env, cwd=cwd or base["cwd"])
    if user:
        uid, _, gid = user.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise OcitoolError(f"--user {user}: give numeric UID[:GID]")
        process["user"] = {"uid": int(uid), "gid": int(gid or 0)}
    if additional_gids:
        process.setdefault("user", {})["additionalGids"] = additional_gids
    if no_new_privs:
        process["noNewPrivileges"] = True
    if caps:
        capabilities = {kind: list(names) for kind, names in (base.get("capabilities") or {}).items()}
        for kind in ("bounding", "effective", "permitted", "ambient", "inheritable"):
            capabilities[kind] = sorted(set(capabilities.get(kind, [])) | set(caps))
        process["capabilities"] = capabilities
    return process


def processes(store: StateStore, container_id: str) -> list[int]:
    """Host pids of the container's processes."""
    state = store.load(container_id)
    if state.cgroup and cgroups.manager_from_state(state.cgroup).exists():
        return cgroups.manager_from_state(state.cgroup).pids()
    return _pids_in_namespace(state.pid)


def _pids_in_namespace(pid: int) -> list[int]:
    """Every process sharing ``pid``'s PID namespace (rootless containers have no cgroup to ask)."""
    try:
        target = os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return []
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}/ns/pid").st_ino == target:
                    found.append(int(name))
            except OSError:  # gone meanwhile
                continue
    return sorted(found)


def _write_pid_file(path: str | None, pid: int) -> None:
    if path is not None:
        atomic_write(os.path.abspath(path), str(pid).encode())


def _signal_quietly(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _stop(pid: int) -> None:
    """SIGKILL ``pid`` and wait (bounded) until it is gone."""
    if not pid:
        return
    _signal_quietly(pid, _signal.SIGKILL)
    deadline = time.monotonic() + STOP_WAIT
    while time.monotonic() < deadline:
        _reap(pid)
        if process_start_time(pid) is None:
            return
        time.sleep(0.01)


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our child and has exited."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except OSError:  # not our child (ChildProcessError), or gone
        pass
