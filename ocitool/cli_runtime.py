"""``ocitool runtime`` / ``ocitool-runtime``: runc's command line, so engines can drive us like runc.

podman (``--runtime``), conmon and containerd call these subcommands with runc's flags;
errors go to stderr and, with ``--log``, to the log file (``--log-format json`` writes
runc-style ``{"level","msg","time"}`` lines, which conmon reads back).

Engines run the runtime several times per container, so this module declares its flags for
:mod:`ocitool.cli_flags` (lighter to start than argparse) and loads only what the chosen
subcommand needs: start-up is most of a runtime command's time.
"""

from __future__ import annotations

import os
import sys

from ocitool import __version__, cjson, log
from ocitool.cli_common import run_guarded
from ocitool.cli_flags import Arg, Command, Flag, Program
from ocitool.errors import OcitoolError, UsageError

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from types import SimpleNamespace
    from typing import NoReturn

    from ocitool.runtime.container import CreateOptions
    from ocitool.runtime.state import StateStore

RUNTIME_SPEC_VERSION = "1.0.2"
PROG = "ocitool-runtime"
DESCRIPTION = """\
An OCI runtime (runc's commands and flags) that runs runtime-spec bundles as containers.

Lifecycle:  create, start, state, kill, delete   (or run = create + start + wait)
Inspect:    list, ps, features                     Other: exec, spec
Example:    ocitool-runtime run --bundle ./bundle mybox"""
GLOBAL_FLAGS = [
    Flag("--root", "State directory [default: /run/ocitool-runtime, $XDG_RUNTIME_DIR/ocitool-runtime for non-root]."),
    Flag("--log", "Also log to this file.", metavar="FILE"),
    Flag("--log-format", "[default: text]", choices=("text", "json"), default="text"),
    Flag("--debug", "Log debug messages and tracebacks.", kind="switch"),
    Flag("--systemd-cgroup", "Accepted for runc compatibility; cgroupfs is used.", kind="switch"),
    Flag("--rootless", None, choices=("true", "false", "auto"), default="auto"),
]


def main(argv: list[str] | None = None, prog: str = PROG) -> NoReturn:
    """Entry point of ``ocitool-runtime``: runc-style errors and exit codes."""
    args = sys.argv[1:] if argv is None else argv
    log.configure(log.WARNING, log.stderr_sink(PROG))  # until the flags say where logs go
    run_guarded(lambda: _dispatch(prog, args), _report, debug="--debug" in args)


def _dispatch(prog: str, args: list[str]) -> int | None:
    """Parse the global flags and the command's, then run the command."""
    program = Program(prog, DESCRIPTION, GLOBAL_FLAGS, _COMMANDS, version_flag="-v, --version",
                      version=f"{PROG} version {__version__}\nspec: {RUNTIME_SPEC_VERSION}")
    options = program.parse(args)
    if options is None:
        return 0
    _configure_logging(options.log, options.log_format, options.debug)
    return options.handler(options)


def _configure_logging(log_file: str | None, log_format: str, debug: bool) -> None:
    stderr = log.stderr_sink(PROG)
    if debug:
        os.environ["OCITOOL_RUNTIME_DEBUG"] = "1"

    def sink(level: int, message: str) -> None:
        if level >= log.WARNING or debug:
            stderr(level, message)
        if log_file:
            _append_log_line(log_file, log_format, level, message)

    log.configure(log.DEBUG if debug else log.INFO if log_file else log.WARNING, sink)


def _append_log_line(path: str, log_format: str, level: int, message: str) -> None:
    """One line in runc's ``--log`` format (text, or the JSON conmon parses)."""
    stamp = log.utc_timestamp()
    name = log.LEVEL_NAMES[level]
    line = (cjson.dumps({"level": name, "msg": message, "time": stamp}) if log_format == "json"
            else f"{stamp} {name.upper()} {message}")
    with open(path, "a", encoding="utf-8") as file:
        file.write(line + "\n")


def _report(message: str) -> None:
    """One line on stderr (and in the --log file, where conmon looks for it)."""
    log.get_logger(__name__).error("%s", message)


def _store(options: SimpleNamespace) -> StateStore:
    from ocitool.runtime.state import StateStore, default_state_root
    return StateStore(options.root or default_state_root())


def _create_options(options: SimpleNamespace) -> CreateOptions:
    from ocitool.runtime.container import CreateOptions
    return CreateOptions(pid_file=options.pid_file,
                         console_socket=options.console_socket, preserve_fds=options.preserve_fds,
                         bundle=options.bundle, no_pivot=options.no_pivot,
                         systemd_cgroup=options.systemd_cgroup)


def spec_command(options: SimpleNamespace) -> None:
    """Write a default config.json into the bundle (like runc spec)."""
    from ocitool.bundle.spec import write_new_spec
    write_new_spec(options.bundle, options.rootless_spec)


def create_command(options: SimpleNamespace) -> None:
    """Create a container; its process waits until 'start'."""
    from ocitool.runtime import container
    container.create(_store(options), options.container_id, _create_options(options))


def start_command(options: SimpleNamespace) -> None:
    """Start a created container's process."""
    from ocitool.runtime import container
    container.start(_store(options), options.container_id)


def run_command(options: SimpleNamespace) -> int:
    """Create and start a container; in the foreground wait for it and exit with its status."""
    from ocitool.runtime import container
    return container.run(_store(options), options.container_id, _create_options(options), options.detach)


def state_command(options: SimpleNamespace) -> None:
    """Print the container's state (runtime-spec JSON)."""
    import json  # for its indentation, which cjson lacks
    from ocitool.runtime import container
    print(json.dumps(container.state_of(_store(options), options.container_id), indent=2))


def kill_command(options: SimpleNamespace) -> None:
    """Send a signal (name or number, default SIGTERM) to the container."""
    from ocitool.runtime import container
    container.kill(_store(options), options.container_id, parse_signal(options.signal), options.all)


def parse_signal(text: str) -> int:
    """``9``, ``KILL`` or ``SIGKILL`` -> 9."""
    import _signal  # the C module: signal.py builds enums at import
    if text.isdigit():
        return int(text)
    name = text.upper() if text.upper().startswith("SIG") else "SIG" + text.upper()
    number = getattr(_signal, name, None) if "_" not in name else None  # not SIG_IGN, SIG_BLOCK...
    if not isinstance(number, int) or number not in _signal.valid_signals():
        raise OcitoolError(f"unknown signal {text!r}")
    return number


def delete_command(options: SimpleNamespace) -> None:
    """Delete a container: its processes, cgroup and state."""
    from ocitool.runtime import container
    container.delete(_store(options), options.container_id, options.force)


def list_command(options: SimpleNamespace) -> None:
    """List containers."""
    store = _store(options)
    rows = []
    for container_id in store.ids():
        state = store.load(container_id)
        status = store.status(state)
        rows.append({"ociVersion": RUNTIME_SPEC_VERSION, "id": state.id,
                     "pid": state.pid if status != "stopped" else 0, "status": status, "bundle": state.bundle,
                     "rootfs": os.path.join(state.bundle, "rootfs"), "created": state.created,
                     "owner": "root" if not state.rootless else str(os.geteuid())})
    if options.quiet:
        print("\n".join(row["id"] for row in rows))
    elif options.format == "json":
        print(cjson.dumps(rows))
    else:
        print(f"{'ID':<20} {'PID':<8} {'STATUS':<10} {'BUNDLE':<40} CREATED")
        for row in rows:
            print(f"{row['id']:<20} {row['pid']:<8} {row['status']:<10} {row['bundle']:<40} {row['created']}")


def ps_command(options: SimpleNamespace) -> None:
    """List the container's processes (host pids)."""
    from ocitool.runtime import container
    pids = container.processes(_store(options), options.container_id)
    if options.format == "json":
        print(cjson.dumps(pids))
        return
    print("PID    CMD")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                cmdline = file.read().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        print(f"{pid:<6} {cmdline}")


def exec_command(options: SimpleNamespace) -> int:
    """Run a new process inside a running container."""
    from ocitool.runtime import container
    store = _store(options)
    command = options.command_args[1:] if options.command_args[:1] == ["--"] else options.command_args
    if options.process:
        process = _read_process_file(options.process)
    elif not command:
        raise UsageError("give a command, or --process FILE")
    else:
        process = container.process_for_exec(store, options.container_id, command, tty=options.tty,
                                             env=options.env, cwd=options.cwd, user=options.user,
                                             additional_gids=options.additional_gids,
                                             no_new_privs=options.no_new_privs, caps=options.cap)
    process_options = container.ProcessOptions(pid_file=options.pid_file,
                                               console_socket=options.console_socket,
                                               preserve_fds=options.preserve_fds)
    return container.exec_process(store, options.container_id, process, process_options, options.detach)


def _read_process_file(path: str) -> dict[str, object]:
    try:
        with open(path, "rb") as file:
            return cjson.loads(file.read())
    except (OSError, ValueError) as exc:
        raise OcitoolError(f"cannot read process file {path}: {exc}") from None


def features_command(options: SimpleNamespace) -> None:
    """Print what this runtime supports (JSON, like runc features)."""
    import json
    from ocitool.runtime import features
    print(json.dumps(features.features(), indent=2))


BUNDLE = Flag("-b, --bundle", "Bundle directory (holds config.json) [default: .].", default=".", metavar="DIR")
CONSOLE_SOCKET = Flag("--console-socket", "Unix socket to send the pty master to.", metavar="SOCKET")
PRESERVE_FDS = Flag("--preserve-fds", "Pass fds 3..3+N-1 to the process.", convert=int, default=0, metavar="N")
FORMAT = Flag("-f, --format", "[default: table]", choices=("table", "json"), default="table")
ID = Arg("ID", dest="container_id")
CREATE_FLAGS = [BUNDLE, CONSOLE_SOCKET, Flag("--pid-file", "Write the init's pid here.", metavar="FILE"),
                Flag("--no-pivot", "chroot instead of pivot_root (for ramfs roots).", kind="switch"),
                Flag("--no-new-keyring", "Accepted for runc compatibility.", kind="switch"), PRESERVE_FDS]
EXEC_FLAGS = [
    Flag("-t, --tty", "Give the process a pty.", kind="switch"),
    Flag("-d, --detach", "Do not wait for the process.", kind="switch"),
    Flag("--pid-file", "Write the process's pid here.", metavar="FILE"), CONSOLE_SOCKET,
    Flag("-e, --env", "Add an environment variable.", kind="list", metavar="K=V"),
    Flag("--cwd", "Working directory inside the container.", metavar="DIR"),
    Flag("-u, --user", "Run as this user.", metavar="UID[:GID]"),
    Flag("-g, --additional-gids", "Add a supplementary group.", kind="list", convert=int, metavar="GID"),
    Flag("-p, --process", "A runtime-spec process JSON to run instead of the arguments.", metavar="FILE"),
    Flag("--no-new-privs", "Set no_new_privileges.", kind="switch"),
    Flag("-c, --cap", "Add a capability.", kind="list"), PRESERVE_FDS,
    Flag("--process-label", None), Flag("--apparmor", None)]

_COMMANDS = {
    "spec": Command(spec_command, [Flag("--rootless", "A config for running as an unprivileged user.", kind="switch",
                                        dest="rootless_spec"), BUNDLE]),
    "create": Command(create_command, CREATE_FLAGS, [ID]),
    "start": Command(start_command, [], [ID]),
    "run": Command(run_command, [*CREATE_FLAGS, Flag("-d, --detach", "Return once the container started.",
                                                     kind="switch"),
                                 Flag("--keep", "Accepted for runc compatibility.", kind="switch")], [ID]),
    "state": Command(state_command, [], [ID]),
    "kill": Command(kill_command, [Flag("-a, --all", "Signal every process in the container.", kind="switch")],
                    [ID, Arg("SIGNAL", "?", default="SIGTERM")]),
    "delete": Command(delete_command, [Flag("-f, --force", "Kill the container first if it is running.",
                                            kind="switch")], [ID]),
    "list": Command(list_command, [FORMAT, Flag("-q, --quiet", "Only ids.", kind="switch")]),
    "ps": Command(ps_command, [FORMAT], [ID]),
    "exec": Command(exec_command, EXEC_FLAGS, [ID, Arg("CMD", "*", dest="command_args",
                                                         help="The command and its arguments.")]),
    "features": Command(features_command),
}
