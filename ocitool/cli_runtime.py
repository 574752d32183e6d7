"""``ocitool runtime`` / ``ocitool-runtime``: runc's command line, so engines can drive us like runc.

podman (``--runtime``), conmon and containerd call these subcommands with runc's flags;
errors go to stderr and, with ``--log``, to the log file (``--log-format json`` writes
runc-style ``{"level","msg","time"}`` lines, which conmon reads back).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from ocitool import __version__
from ocitool.cli_common import run_command_line
from ocitool.errors import OcitoolError
from ocitool.runtime import container
from ocitool.runtime.state import StateStore, default_state_root

RUNTIME_SPEC_VERSION = "1.0.2"


class StderrFormatter(logging.Formatter):
    """``ocitool-runtime: error: <message>``."""

    def format(self, record: logging.LogRecord) -> str:
        return f"ocitool-runtime: {record.levelname.lower()}: {record.getMessage()}"


class JsonLogFormatter(logging.Formatter):
    """runc's JSON log line format."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"level": record.levelname.lower(), "msg": record.getMessage(),
                           "time": dt.datetime.now(dt.timezone.utc).isoformat()})


@click.group("runtime", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(f"{__version__}\nspec: {RUNTIME_SPEC_VERSION}", prog_name="ocitool-runtime",
                      message="%(prog)s version %(version)s")
@click.option("--root", "state_root", type=click.Path(file_okay=False),
              help="State directory [default: /run/ocitool-runtime, $XDG_RUNTIME_DIR/ocitool-runtime for non-root].")
@click.option("--log", "log_file", type=click.Path(dir_okay=False), help="Also log to this file.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--debug", is_flag=True, help="Log debug messages and tracebacks.")
@click.option("--systemd-cgroup", is_flag=True, help="Accepted for runc compatibility; cgroupfs is used.")
@click.option("--rootless", type=click.Choice(["true", "false", "auto"]), default="auto", hidden=True)
@click.pass_context
def runtime(ctx: click.Context, state_root: str | None, log_file: str | None, log_format: str, debug: bool,
            systemd_cgroup: bool, rootless: str) -> None:
    """An OCI runtime (runc's commands and flags) that runs runtime-spec bundles as containers.

    \b
    Lifecycle:  create, start, state, kill, delete   (or run = create + start + wait)
    Inspect:    list, ps, features                     Other: exec, spec
    Example:    ocitool-runtime run --bundle ./bundle mybox
    """
    _configure_logging(log_file, log_format, debug)
    ctx.obj = {"store": StateStore(Path(state_root) if state_root else default_state_root()),
               "systemd": systemd_cgroup}


def _configure_logging(log_file: str | None, log_format: str, debug: bool) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    handlers[0].setFormatter(StderrFormatter())
    handlers[0].setLevel(logging.DEBUG if debug else logging.WARNING)
    if log_file:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(JsonLogFormatter() if log_format == "json" else
                             logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handlers.append(handler)
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=handlers, force=True)
    if debug:
        os.environ["OCITOOL_RUNTIME_DEBUG"] = "1"


def _store(ctx: click.Context) -> StateStore:
    return ctx.obj["store"]


def bundle_option(func: Any) -> Any:
    return click.option("-b", "--bundle", type=click.Path(file_okay=False), default=".", show_default=True,
                        help="Bundle directory (holds config.json).")(func)


def create_options(func: Any) -> Any:
    """The flags runc's create and run share."""
    for decorator in (
        click.option("--console-socket", type=click.Path(), help="Unix socket to send the pty master to."),
        click.option("--pid-file", type=click.Path(dir_okay=False), help="Write the init's pid here."),
        click.option("--no-pivot", is_flag=True, help="chroot instead of pivot_root (for ramfs roots)."),
        click.option("--no-new-keyring", is_flag=True, help="Accepted for runc compatibility."),
        click.option("--preserve-fds", type=int, default=0, help="Pass fds 3..3+N-1 to the container."),
    ):
        func = decorator(func)
    return bundle_option(func)


def _create_options(ctx: click.Context, bundle: str, console_socket: str | None, pid_file: str | None,
                    no_pivot: bool, preserve_fds: int) -> container.CreateOptions:
    return container.CreateOptions(pid_file=Path(pid_file) if pid_file else None, console_socket=console_socket,
                                   preserve_fds=preserve_fds, bundle=Path(bundle), no_pivot=no_pivot,
                                   systemd_cgroup=ctx.obj["systemd"])


@runtime.command("spec")
@click.option("--rootless", is_flag=True, help="A config for running as an unprivileged user.")
@bundle_option
def spec_command(rootless: bool, bundle: str) -> None:
    """Write a default config.json into the bundle (like runc spec)."""
    from ocitool.bundle.spec import default_spec, write_spec
    path = Path(bundle) / "config.json"
    if path.exists():
        raise OcitoolError(f"{path} already exists; remove it first")
    write_spec(Path(bundle), default_spec(rootless=rootless))


@runtime.command("create")
@create_options
@click.argument("container_id")
@click.pass_context
def create_command(ctx: click.Context, container_id: str, bundle: str, console_socket: str | None,
                   pid_file: str | None, no_pivot: bool, no_new_keyring: bool, preserve_fds: int) -> None:
    """Create a container; its process waits until 'start'."""
    container.create(_store(ctx), container_id,
                     _create_options(ctx, bundle, console_socket, pid_file, no_pivot, preserve_fds))


@runtime.command("start")
@click.argument("container_id")
@click.pass_context
def start_command(ctx: click.Context, container_id: str) -> None:
    """Start a created container's process."""
    container.start(_store(ctx), container_id)


@runtime.command("run")
@create_options
@click.option("-d", "--detach", is_flag=True, help="Return once the container started.")
@click.option("--keep", is_flag=True, help="Accepted for runc compatibility.")
@click.argument("container_id")
@click.pass_context
def run_command(ctx: click.Context, container_id: str, bundle: str, console_socket: str | None, pid_file: str | None,
                no_pivot: bool, no_new_keyring: bool, preserve_fds: int, detach: bool, keep: bool) -> None:
    """Create and start a container; in the foreground wait for it and exit with its status."""
    options = _create_options(ctx, bundle, console_socket, pid_file, no_pivot, preserve_fds)
    ctx.exit(container.run(_store(ctx), container_id, options, detach))


@runtime.command("state")
@click.argument("container_id")
@click.pass_context
def state_command(ctx: click.Context, container_id: str) -> None:
    """Print the container's state (runtime-spec JSON)."""
    click.echo(json.dumps(container.state_of(_store(ctx), container_id), indent=2))


@runtime.command("kill")
@click.option("-a", "--all", "all_processes", is_flag=True, help="Signal every process in the container.")
@click.argument("container_id")
@click.argument("sig", default="SIGTERM")
@click.pass_context
def kill_command(ctx: click.Context, container_id: str, sig: str, all_processes: bool) -> None:
    """Send a signal (name or number, default SIGTERM) to the container."""
    container.kill(_store(ctx), container_id, parse_signal(sig), all_processes)


def parse_signal(text: str) -> int:
    """``9``, ``KILL`` or ``SIGKILL`` -> 9."""
    if text.isdigit():
        return int(text)
    name = text.upper() if text.upper().startswith("SIG") else "SIG" + text.upper()
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise OcitoolError(f"unknown signal {text!r}") from None


@runtime.command("delete")
@click.option("-f", "--force", is_flag=True, help="Kill the container first if it is running.")
@click.argument("container_id")
@click.pass_context
def delete_command(ctx: click.Context, container_id: str, force: bool) -> None:
    """Delete a container: its processes, cgroup and state."""
    container.delete(_store(ctx), container_id, force)


@runtime.command("list")
@click.option("-f", "--format", "output_format", type=click.Choice(["table", "json"]), default="table")
@click.option("-q", "--quiet", is_flag=True, help="Only ids.")
@click.pass_context
def list_command(ctx: click.Context, output_format: str, quiet: bool) -> None:
    """List containers."""
    store = _store(ctx)
    rows = []
    for container_id in store.ids():
        state = store.load(container_id)
        status = store.status(state)
        rows.append({"ociVersion": RUNTIME_SPEC_VERSION, "id": state.id,
                     "pid": state.pid if status != "stopped" else 0, "status": status, "bundle": state.bundle,
                     "rootfs": str(Path(state.bundle) / "rootfs"), "created": state.created,
                     "owner": "root" if not state.rootless else str(os.geteuid())})
    if quiet:
        click.echo("\n".join(row["id"] for row in rows))
    elif output_format == "json":
        click.echo(json.dumps(rows))
    else:
        click.echo(f"{'ID':<20} {'PID':<8} {'STATUS':<10} {'BUNDLE':<40} CREATED")
        for row in rows:
            click.echo(f"{row['id']:<20} {row['pid']:<8} {row['status']:<10} {row['bundle']:<40} {row['created']}")


@runtime.command("ps")
@click.option("-f", "--format", "output_format", type=click.Choice(["table", "json"]), default="table")
@click.argument("container_id")
@click.pass_context
def ps_command(ctx: click.Context, container_id: str, output_format: str) -> None:
    """List the container's processes (host pids)."""
    pids = container.processes(_store(ctx), container_id)
    if output_format == "json":
        click.echo(json.dumps(pids))
        return
    click.echo("PID    CMD")
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        click.echo(f"{pid:<6} {cmdline}")


@runtime.command("exec", context_settings={"allow_interspersed_args": False})
@click.option("-t", "--tty", is_flag=True, help="Give the process a pty.")
@click.option("-d", "--detach", is_flag=True, help="Do not wait for the process.")
@click.option("--pid-file", type=click.Path(dir_okay=False))
@click.option("--console-socket", type=click.Path())
@click.option("-e", "--env", multiple=True, metavar="K=V", help="Add an environment variable.")
@click.option("--cwd", help="Working directory inside the container.")
@click.option("-u", "--user", metavar="UID[:GID]", help="Run as this user.")
@click.option("-g", "--additional-gids", multiple=True, type=int)
@click.option("-p", "--process", "process_file", type=click.Path(dir_okay=False),
              help="A runtime-spec process JSON to run instead of the arguments.")
@click.option("--no-new-privs", is_flag=True)
@click.option("-c", "--cap", multiple=True, help="Add a capability.")
@click.option("--preserve-fds", type=int, default=0)
@click.option("--process-label", hidden=True)
@click.option("--apparmor", hidden=True)
@click.argument("container_id")
@click.argument("command", nargs=-1)
@click.pass_context
def exec_command(ctx: click.Context, container_id: str, command: tuple[str, ...], tty: bool, detach: bool,
                 pid_file: str | None, console_socket: str | None, env: tuple[str, ...], cwd: str | None,
                 user: str | None, additional_gids: tuple[int, ...], process_file: str | None, no_new_privs: bool,
                 cap: tuple[str, ...], preserve_fds: int, process_label: str | None, apparmor: str | None) -> None:
    """Run a new process inside a running container."""
    store = _store(ctx)
    if process_file:
        process = _read_process_file(process_file)
    else:
        if not command:
            raise click.UsageError("give a command, or --process FILE")
        process = container.process_for_exec(store, container_id, list(command), tty=tty, env=list(env), cwd=cwd,
                                             user=user, additional_gids=list(additional_gids),
                                             no_new_privs=no_new_privs, caps=list(cap))
    options = container.ProcessOptions(pid_file=Path(pid_file) if pid_file else None, console_socket=console_socket,
                                       preserve_fds=preserve_fds)
    ctx.exit(container.exec_process(store, container_id, process, options, detach))


def _read_process_file(path: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise OcitoolError(f"cannot read process file {path}: {exc}") from None


@runtime.command("features")
def features_command() -> None:
    """Print what this runtime supports (JSON, like runc features)."""
    from ocitool.runtime import features
    click.echo(json.dumps(features.features(), indent=2))


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``ocitool-runtime``: runc-style errors and exit codes."""
    args = sys.argv[1:] if argv is None else argv
    run_command_line(runtime, args, "ocitool-runtime", _report, debug="--debug" in args)


def _report(message: str) -> None:
    """One line on stderr (and in the --log file, where conmon looks for it)."""
    if logging.getLogger().handlers:
        logging.getLogger("ocitool.runtime").error("%s", message)
    else:
        click.echo(f"ocitool-runtime: error: {message}", err=True)
