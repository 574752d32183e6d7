"""The container's init: what runs inside the new namespaces, from fork to execve.

Two processes, as in runc's nsexec: *stage one* (forked by the runtime) joins or creates
the namespaces; since a new PID namespace only applies to children, it forks *stage
two*, which becomes PID 1, prepares the rootfs, waits for ``start`` on the exec fifo, and
execs the container process. Each step reports over the :class:`Channel`, so any failure
reaches the runtime as one clear line instead of a dead child.
"""

from __future__ import annotations

import os
import _signal  # the C module: signal.py builds enums at import
import sys

# Codecs Python imports lazily: after pivot_root the host's standard library is out of reach.
import encodings.ascii  # noqa: F401
import encodings.latin_1  # noqa: F401

from ocitool.errors import OcitoolError
from ocitool.runtime import hooks, mounts, namespaces, process, syscalls
from ocitool.runtime.channel import Channel

DEBUG = bool(os.environ.get("OCITOOL_RUNTIME_DEBUG"))
if DEBUG:  # for tracebacks in _report, imported now: after pivot_root the host's library is out of reach
    import traceback

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn


class InitOptions:
    """What stage two needs to know beyond config.json: the bundle, ``fifo`` (exec.fifo, on
    which stage two blocks until ``start``), the runtime's flags, and ``die_with_runtime``
    for a foreground run, whose container must not outlive the runtime."""

    __slots__ = ("bundle", "fifo", "no_pivot", "preserve_fds", "die_with_runtime")

    def __init__(self, bundle: str, fifo: str, no_pivot: bool, preserve_fds: int,
                 die_with_runtime: bool = False) -> None:
        self.bundle = bundle
        self.fifo = fifo
        self.no_pivot = no_pivot
        self.preserve_fds = preserve_fds
        self.die_with_runtime = die_with_runtime


def run_stage_one(channel: Channel, join_cgroup: Callable[[], None], spec: dict[str, Any],
                  prepared: process.PreparedProcess, options: InitOptions) -> NoReturn:
    """Stage one: join the cgroup, make the namespaces, then fork PID 1 and report its pid.

    All but the cgroup namespace are made while the runtime may still be moving us into the
    container's cgroup (cgroup v2 without clone3); "go" says that is done, so the cgroup
    namespace (rooted at the cgroup it is made in) and PID 1 (born in our cgroup) come after it.
    """
    try:
        join_cgroup()
        linux = spec.get("linux") or {}
        spaces = namespaces.parse_namespaces(linux)
        if any(ns.type == "user" and not ns.path for ns in spaces):
            syscalls.unshare(syscalls.CLONE_NEWUSER)
            channel.send("userns")  # the runtime maps our ids, which needs us dumpable until then
            channel.receive("mapped")
        process.make_undumpable()
        cgroup = [ns for ns in spaces if ns.type == "cgroup"]
        others = [ns for ns in spaces if ns.type != "cgroup"]
        namespaces.join_namespaces(others)
        syscalls.unshare(namespaces.unshare_flags(others) & ~syscalls.CLONE_NEWUSER)
        channel.receive("go")
        namespaces.join_namespaces(cgroup)
        syscalls.unshare(namespaces.unshare_flags(cgroup))
        pid = os.fork()
        if pid == 0:
            run_stage_two(channel, spec, prepared, options, in_user_namespace=namespaces.in_user_namespace())
        channel.send("pid", pid=pid)
        os._exit(0)
    except BaseException as exc:  # noqa: BLE001 - everything must reach the runtime
        _report(channel, exc)


def run_stage_two(channel: Channel, spec: dict[str, Any], prepared: process.PreparedProcess,
                  options: InitOptions, in_user_namespace: bool) -> NoReturn:
    """Stage two (PID 1): rootfs, hooks, terminal, wait for start, exec."""
    try:
        channel.receive("setup")
        os.setsid()
        proc = spec["process"]
        rootfs = os.path.realpath(os.path.join(options.bundle, spec["root"]["path"]))
        mounts.prepare_rootfs(spec, options.bundle)
        fifo = os.open(options.fifo, os.O_RDWR | os.O_CLOEXEC)  # before pivot_root hides it
        channel.send("mounted")
        message, _ = channel.receive("state")
        if options.die_with_runtime:
            _die_with_runtime()
        hooks.run_hooks(spec, "createContainer", message["state"])
        hooks.load_for_container(spec)
        _load_terminal_code(proc)
        mounts.enter_rootfs(rootfs, options.no_pivot)
        mounts.finish_rootfs(spec)
        _set_names(spec)
        process.set_rlimits(proc.get("rlimits") or [])
        process.set_oom_score_adj(proc.get("oomScoreAdj"))
        if proc.get("terminal"):
            _set_up_terminal(channel)
        path = process.find_executable(proc["args"][0], proc.get("env") or [], proc["cwd"])
        channel.send("ready")
        channel.close()
        os.read(fifo, 1)
        os.close(fifo)
        hooks.run_hooks(spec, "startContainer", message["state"])
        process.become_process(prepared, options.preserve_fds, in_user_namespace)
        process.exec_process(path, proc["args"], proc.get("env") or [])
    except BaseException as exc:  # noqa: BLE001
        _report(channel, exc)


def run_exec(channel: Channel, join_cgroup: Callable[[], None], container_pid: int,
             namespace_types: list[str], prepared: process.PreparedProcess, preserve_fds: int) -> NoReturn:
    """``exec``: join a running container's cgroup and namespaces, fork into its PID namespace, exec ``proc``."""
    try:
        join_cgroup()
        process.make_undumpable()
        _load_terminal_code(prepared.config)
        channel.receive("go")
        namespaces.join_namespaces([namespaces.Namespace(kind, f"/proc/{container_pid}/ns/{namespaces.PROC_NAMES[kind]}")
                                    for kind in namespace_types])
        pid = os.fork()
        if pid == 0:
            _exec_in_container(channel, prepared, preserve_fds, namespaces.in_user_namespace())
        channel.send("pid", pid=pid)
        os._exit(0)
    except BaseException as exc:  # noqa: BLE001
        _report(channel, exc)


def _exec_in_container(channel: Channel, prepared: process.PreparedProcess, preserve_fds: int,
                       in_user_namespace: bool) -> NoReturn:
    try:
        channel.receive("setup")
        os.setsid()
        proc = prepared.config
        process.set_rlimits(proc.get("rlimits") or [])
        if proc.get("terminal"):
            _set_up_terminal(channel)
        path = process.find_executable(proc["args"][0], proc.get("env") or [], proc["cwd"])
        channel.send("ready")
        channel.close()
        process.become_process(prepared, preserve_fds, in_user_namespace)
        process.exec_process(path, proc["args"], proc.get("env") or [])
    except BaseException as exc:  # noqa: BLE001
        _report(channel, exc)


def _die_with_runtime() -> None:
    """Be killed when the foreground runtime dies: since stage one exited, it is our parent
    (by subreaping). Had it died already, the channel's next message would fail."""
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, _signal.SIGKILL)


def _set_names(spec: dict[str, Any]) -> None:
    if spec.get("hostname"):
        syscalls.sethostname(spec["hostname"])
    if spec.get("domainname"):
        syscalls.setdomainname(spec["domainname"])


def _load_terminal_code(proc: dict[str, Any]) -> None:
    """Import the pty code for a process with a terminal (only then: it loads termios, tty and
    select) while the host's library is reachable, before pivot_root or joining a mount namespace."""
    if proc.get("terminal"):
        import ocitool.runtime.terminal  # noqa: F401


def _set_up_terminal(channel: Channel) -> None:
    from ocitool.runtime import terminal  # loaded by _load_terminal_code
    master, slave = terminal.open_pty()
    channel.send("console", fds=[master])
    os.close(master)
    terminal.make_controlling_terminal(slave)


def _report(channel: Channel, exc: BaseException) -> NoReturn:
    """Tell the runtime what failed (or, once it stopped listening, say it on stderr) and exit."""
    message = str(exc) if isinstance(exc, OcitoolError) else f"container init failed: {exc!r}"
    if DEBUG:
        traceback.print_exc()
    code = exc.exit_code if isinstance(exc, process.ExecutableError) else 1
    try:
        channel.send("error", message=message, exit_code=code)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the runtime gave up first and reports its own error
    except OSError:  # we closed the channel after "ready": nobody else can say it
        print(f"ocitool-runtime: error: {message}", file=sys.stderr, flush=True)
    os._exit(code)
