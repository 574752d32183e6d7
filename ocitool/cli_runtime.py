"""``ocitool runtime`` / ``ocitool-runtime``: runc's command line, so engines can drive us like runc.

podman (``--runtime``), conmon and containerd call these subcommands with runc's flags;
errors go to stderr and, with ``--log``, to the log file (``--log-format json`` writes
runc-style ``{"level","msg","time"}`` lines, which conmon reads back).

Engines run the runtime several times per container, so this module parses with
``argparse`` and loads only what the chosen subcommand needs: start-up is most of a
runtime command's time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ocitool import __version__, log
from ocitool.cli_common import (Commands, Parser, add_command_arguments, no_arguments, parse_command_flags,
                                parse_global_flags, run_guarded)
from ocitool.errors import OcitoolError, UsageError

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
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

def main(argv: list[str] | None = None, prog: str = PROG) -> NoReturn:
    """Entry point of ``ocitool-runtime``: runc-style errors and exit codes."""
    args = sys.argv[1:] if argv is None else argv
    log.configure(log.WARNING, log.stderr_sink(PROG))  # until the flags say where logs go
    run_guarded(lambda: _dispatch(prog, args), _report, debug="--debug" in args)


def _dispatch(prog: str, args: list[str]) -> int | None:
    """Parse the global flags, then the subcommand's (whose parser alone is built), and run it."""
    options = parse_global_flags(build_parser(prog), args)
    if options is None or not parse_command_flags(prog, _COMMANDS, options):
        return 0
    _configure_logging(options.log, options.log_format, options.debug)
    return options.handler(options)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """runc's global flags; the subcommand's own arguments are left for the command's parser."""
    parser = Parser(prog, DESCRIPTION)
    parser.add_argument("-v", "--version", action="version",
                        version=f"{PROG} version {__version__}\nspec: {RUNTIME_SPEC_VERSION}")
    parser.add_argument("--root", help="State directory [default: /run/ocitool-runtime, "
                                       "$XDG_RUNTIME_DIR/ocitool-runtime for non-root].")
    parser.add_argument("--log", metavar="FILE", help="Also log to this file.")
    parser.add_argument("--log-format", choices=["text", "json"], default="text", help="[default: text]")
    parser.add_argument("--debug", action="store_true", help="Log debug messages and tracebacks.")
    parser.add_argument("--systemd-cgroup", action="store_true",
                        help="Accepted for runc compatibility; cgroupfs is used.")
    parser.add_argument("--rootless", choices=["true", "false", "auto"], default="auto", help=argparse.SUPPRESS)
    add_command_arguments(parser, _COMMANDS)
    return parser


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
    line = (json.dumps({"level": name, "msg": message, "time": stamp}) if log_format == "json"
            else f"{stamp} {name.upper()} {message}")
    with open(path, "a", encoding="utf-8") as file:
        file.write(line + "\n")


def _report(message: str) -> None:
    """One line on stderr (and in the --log file, where conmon looks for it)."""
    log.get_logger(__name__).error("%s", message)


def _store(options: argparse.Namespace) -> StateStore:
    from ocitool.runtime.state import StateStore, default_state_root
    return StateStore(options.root or default_state_root())


def _bundle_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument("-b", "--bundle", default=".", help="Bundle directory (holds config.json) [default: .].")


def _create_arguments(command: argparse.ArgumentParser) -> None:
    """The flags runc's create and run share."""
    _bundle_argument(command)
    command.add_argument("--console-socket", help="Unix socket to send the pty master to.")
    command.add_argument("--pid-file", help="Write the init's pid here.")
    command.add_argument("--no-pivot", action="store_true", help="chroot instead of pivot_root (for ramfs roots).")
    command.add_argument("--no-new-keyring", action="store_true", help="Accepted for runc compatibility.")
    command.add_argument("--preserve-fds", type=int, default=0, help="Pass fds 3..3+N-1 to the container.")
    command.add_argument("container_id", metavar="ID")


def _create_options(options: argparse.Namespace) -> CreateOptions:
    from ocitool.runtime.container import CreateOptions
    return CreateOptions(pid_file=options.pid_file,
                         console_socket=options.console_socket, preserve_fds=options.preserve_fds,
                         bundle=options.bundle, no_pivot=options.no_pivot,
                         systemd_cgroup=options.systemd_cgroup)


def _id_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument("container_id", metavar="ID")


def spec_command(options: argparse.Namespace) -> None:
    """Write a default config.json into the bundle (like runc spec)."""
    from ocitool.bundle.spec import write_new_spec
    write_new_spec(options.bundle, options.rootless_spec)


def _spec_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--rootless", dest="rootless_spec", action="store_true",
                         help="A config for running as an unprivileged user.")
    _bundle_argument(command)


def create_command(options: argparse.Namespace) -> None:
    """Create a container; its process waits until 'start'."""
    from ocitool.runtime import container
    container.create(_store(options), options.container_id, _create_options(options))


def start_command(options: argparse.Namespace) -> None:
    """Start a created container's process."""
    from ocitool.runtime import container
    container.start(_store(options), options.container_id)


def run_command(options: argparse.Namespace) -> int:
    """Create and start a container; in the foreground wait for it and exit with its status."""
    from ocitool.runtime import container
    return container.run(_store(options), options.container_id, _create_options(options), options.detach)


def _run_arguments(command: argparse.ArgumentParser) -> None:
    _create_arguments(command)
    command.add_argument("-d", "--detach", action="store_true", help="Return once the container started.")
    command.add_argument("--keep", action="store_true", help="Accepted for runc compatibility.")


def state_command(options: argparse.Namespace) -> None:
    """Print the container's state (runtime-spec JSON)."""
    from ocitool.runtime import container
    print(json.dumps(container.state_of(_store(options), options.container_id), indent=2))


def kill_command(options: argparse.Namespace) -> None:
    """Send a signal (name or number, default SIGTERM) to the container."""
    from ocitool.runtime import container
    container.kill(_store(options), options.container_id, parse_signal(options.signal), options.all)


def _kill_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("-a", "--all", action="store_true", help="Signal every process in the container.")
    _id_argument(command)
    command.add_argument("signal", metavar="SIGNAL", nargs="?", default="SIGTERM")


def parse_signal(text: str) -> int:
    """``9``, ``KILL`` or ``SIGKILL`` -> 9."""
    import signal
    if text.isdigit():
        return int(text)
    name = text.upper() if text.upper().startswith("SIG") else "SIG" + text.upper()
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise OcitoolError(f"unknown signal {text!r}") from None


def delete_command(options: argparse.Namespace) -> None:
    """Delete a container: its processes, cgroup and state."""
    from ocitool.runtime import container
    container.delete(_store(options), options.container_id, options.force)


def _delete_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("-f", "--force", action="store_true", help="Kill the container first if it is running.")
    _id_argument(command)


def list_command(options: argparse.Namespace) -> None:
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
        print(json.dumps(rows))
    else:
        print(f"{'ID':<20} {'PID':<8} {'STATUS':<10} {'BUNDLE':<40} CREATED")
        for row in rows:
            print(f"{row['id']:<20} {row['pid']:<8} {row['status']:<10} {row['bundle']:<40} {row['created']}")


def _format_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument("-f", "--format", choices=["table", "json"], default="table", help="[default: table]")


def _list_arguments(command: argparse.ArgumentParser) -> None:
    _format_argument(command)
    command.add_argument("-q", "--quiet", action="store_true", help="Only ids.")


def ps_command(options: argparse.Namespace) -> None:
    """List the container's processes (host pids)."""
    from ocitool.runtime import container
    pids = container.processes(_store(options), options.container_id)
    if options.format == "json":
        print(json.dumps(pids))
        return
    print("PID    CMD")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                cmdline = file.read().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        print(f"{pid:<6} {cmdline}")


def _ps_arguments(command: argparse.ArgumentParser) -> None:
    _format_argument(command)
    _id_argument(command)


def exec_command(options: argparse.Namespace) -> int:
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


def _exec_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("-t", "--tty", action="store_true", help="Give the process a pty.")
    command.add_argument("-d", "--detach", action="store_true", help="Do not wait for the process.")
    command.add_argument("--pid-file", help="Write the process's pid here.")
    command.add_argument("--console-socket", help="Unix socket to send the pty master to.")
    command.add_argument("-e", "--env", action="append", default=[], metavar="K=V",
                         help="Add an environment variable.")
    command.add_argument("--cwd", help="Working directory inside the container.")
    command.add_argument("-u", "--user", metavar="UID[:GID]", help="Run as this user.")
    command.add_argument("-g", "--additional-gids", action="append", type=int, default=[], metavar="GID",
                         help="Add a supplementary group.")
    command.add_argument("-p", "--process", metavar="FILE",
                         help="A runtime-spec process JSON to run instead of the arguments.")
    command.add_argument("--no-new-privs", action="store_true", help="Set no_new_privileges.")
    command.add_argument("-c", "--cap", action="append", default=[], help="Add a capability.")
    command.add_argument("--preserve-fds", type=int, default=0, help="Pass fds 3..3+N-1 to the process.")
    command.add_argument("--process-label", help=argparse.SUPPRESS)
    command.add_argument("--apparmor", help=argparse.SUPPRESS)
    _id_argument(command)
    command.add_argument("command_args", metavar="CMD", nargs=argparse.REMAINDER,
                         help="The command and its arguments.")


def _read_process_file(path: str) -> dict[str, object]:
    try:
        with open(path, "rb") as file:
            return json.loads(file.read())
    except (OSError, ValueError) as exc:
        raise OcitoolError(f"cannot read process file {path}: {exc}") from None


def features_command(options: argparse.Namespace) -> None:
    """Print what this runtime supports (JSON, like runc features)."""
    from ocitool.runtime import features
    print(json.dumps(features.features(), indent=2))


_COMMANDS: Commands = {
    "spec": (spec_command, _spec_arguments),
    "create": (create_command, _create_arguments),
    "start": (start_command, _id_argument),
    "run": (run_command, _run_arguments),
    "state": (state_command, _id_argument),
    "kill": (kill_command, _kill_arguments),
    "delete": (delete_command, _delete_arguments),
    "list": (list_command, _list_arguments),
    "ps": (ps_command, _ps_arguments),
    "exec": (exec_command, _exec_arguments),
    "features": (features_command, no_arguments),
}
