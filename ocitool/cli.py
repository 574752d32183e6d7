"""The ``ocitool`` command line: parse, call a stage, print. No logic of its own."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ocitool import __version__, log
from ocitool.cli_common import run_guarded
from ocitool.config import default_root, load_config
from ocitool.errors import OcitoolError, UsageError
from ocitool.image import inspect as image_views
from ocitool.image.manifest import decode_manifest
from ocitool.image.access import AccessOptions
from ocitool.image.reference import parse_reference
from ocitool.image.source import PULL_POLICIES, local_image
from ocitool.image.store import ImageStore
from ocitool.progress import LineProgress, NoProgress, TerminalProgress, human_size

TYPE_CHECKING = False  # type checkers treat this as True; these imports serve annotations only
if TYPE_CHECKING:
    from typing import Any

    from ocitool.config import Config
    from ocitool.image.platform import Platform
    from ocitool.image.reference import Reference
    from ocitool.progress import Progress

LOG_LEVELS = {"debug": log.DEBUG, "info": log.INFO, "warning": log.WARNING, "error": log.ERROR}
RUN_FAILED = 125  # Docker's status for "the tool failed, not the container"
TRANSPORT = "docker://"


class App:
    """What the global options decided, shared by every command."""

    __slots__ = ("root", "config_file", "_config")

    def __init__(self, root: Path, config_file: str | None):
        self.root = root
        self.config_file = config_file
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        """The config file, read on first use: only commands that reach a registry need it."""
        if self._config is None:
            self._config = load_config(self.config_file)
        return self._config

    def store(self) -> ImageStore:
        return ImageStore.open(self.root / "images")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ocitool")
@click.option("--root", type=click.Path(file_okay=False), help="State directory [default: $OCITOOL_ROOT, "
              "/var/lib/ocitool for root, ~/.local/share/ocitool otherwise].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML config file [default: $OCITOOL_CONFIG, ~/.config/ocitool/config.toml, "
                   "/etc/ocitool/config.toml].")
@click.option("--log-level", type=click.Choice(list(LOG_LEVELS)), default="warning", show_default=True,
              help="How much to log on stderr; 'debug' also shows tracebacks.")
@click.pass_context
def cli(ctx: click.Context, root: str | None, config_file: str | None, log_level: str) -> None:
    """Pull OCI images, unpack them into bundles, and run them.

    \b
    Image stage:   pull, images, inspect, tags, rmi, gc
    Bundle stage:  unpack, spec
    One-shot:      run, ps, rm, prune
    Runtime stage: runtime SUBCOMMAND (runc's commands; also the ocitool-runtime program)
    """
    log.configure(LOG_LEVELS[log_level], log.stderr_sink("ocitool"))
    ctx.obj = App(Path(root) if root else default_root(), config_file)


def access_options(func: Any) -> Any:
    """The registry-access flags shared by commands that talk to registries."""
    func = click.option("--authfile", type=click.Path(dir_okay=False),
                        help="Auth file (containers auth.json or Docker config.json format).")(func)
    func = click.option("--creds", metavar="USER:PASS", help="Credentials for the registry.")(func)
    func = click.option("--tls-verify", type=click.BOOL, default=None, metavar="true|false",
                        help="Require HTTPS with a verified certificate [default: true, "
                             "false for loopback and 'insecure' registries].")(func)
    return func


def platform_option(func: Any) -> Any:
    """``--platform OS/ARCH[/VARIANT]``."""
    return click.option("--platform", "platform_text", metavar="OS/ARCH[/VARIANT]",
                        help="Platform to choose from a multi-platform image [default: this host's].")(func)


def _platform(text: str | None) -> Platform | None:
    if not text:
        return None
    from ocitool.image.platform import parse_platform  # only --platform needs it
    return parse_platform(text)


def _progress(quiet: bool) -> Progress:
    """Bars on a terminal, lines in a pipe, nothing when quiet."""
    if quiet:
        return NoProgress()
    return TerminalProgress() if sys.stderr.isatty() else LineProgress()


def _remote_ref(text: str) -> Reference:
    return parse_reference(text.removeprefix(TRANSPORT))


def _print_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=4))


@cli.command("pull")
@platform_option
@access_options
@click.option("-q", "--quiet", is_flag=True, help="Print only the digest, no progress.")
@click.argument("image")
@click.pass_obj
def pull_command(app: App, image: str, platform_text: str | None, tls_verify: bool | None, creds: str | None,
                 authfile: str | None, quiet: bool) -> None:
    """Pull IMAGE from its registry into the local store and print its digest.

    \b
    IMAGE is a reference such as busybox, quay.io/org/app:1.2,
    localhost:5000/x@sha256:..., optionally prefixed with docker://.
    Mirrors and insecure registries come from the config file.
    Example: ocitool pull --platform linux/arm64 alpine:3.20
    """
    from ocitool.image.pull import pull  # the HTTP stack: loaded only by commands that need it
    ref = _remote_ref(image)
    result = pull(ref, app.store(), app.config, AccessOptions(tls_verify, creds, authfile),
                  _platform(platform_text), _progress(quiet))
    if not quiet:
        click.echo(f"Pulled {result.name}" + (f" ({result.platform})" if result.platform else ""), err=True)
        if result.registry_digest != result.digest:
            click.echo(f"Converted Docker manifest {result.registry_digest} to OCI", err=True)
    click.echo(result.digest)


@cli.command("images")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_obj
def images_command(app: App, output_format: str) -> None:
    """List the images in the local store."""
    rows = image_views.list_images(app.store())
    if output_format == "json":
        _print_json(rows)
        return
    table = [("REPOSITORY", "TAG", "DIGEST", "PLATFORM", "CREATED", "SIZE")]
    table += [(r["repository"], r["tag"], r["digest"].partition(":")[2][:12], r["platform"],
               (r["created"] or "")[:19].replace("T", " "), human_size(r["size"])) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@cli.command("inspect")
@click.option("--raw", is_flag=True, help="Print the manifest exactly as stored (or as the registry sent it).")
@click.option("--config", "show_config", is_flag=True, help="Print the image's config JSON.")
@platform_option
@access_options
@click.argument("image")
@click.pass_obj
def inspect_command(app: App, image: str, raw: bool, show_config: bool, platform_text: str | None,
                    tls_verify: bool | None, creds: str | None, authfile: str | None) -> None:
    """Show an image's details: a local one, or with docker://REF straight from its registry.

    \b
    Examples: ocitool inspect busybox
              ocitool inspect --config busybox
              ocitool inspect --raw docker://localhost:5000/app:1.0
    """
    if image.startswith(TRANSPORT):
        _inspect_remote(app, _remote_ref(image), raw, show_config, _platform(platform_text),
                        AccessOptions(tls_verify, creds, authfile))
        return
    local = image_views.load_local(app.store(), str(parse_reference(image)))
    if raw:
        click.echo(local.manifest_bytes.decode())
    elif show_config:
        _print_json(local.config)
    else:
        _print_json(image_views.summary(local.name, local.descriptor["digest"], local.manifest, local.config))


def _inspect_remote(app: App, ref: Reference, raw: bool, show_config: bool, platform: Platform | None,
                    access: AccessOptions) -> None:
    from ocitool.image.pull import fetch_config, resolve
    from ocitool.image.remote import open_manifest
    if raw:
        client, response = open_manifest(ref, app.config, access)
        client.close()
        decode_manifest(response.data, response.media_type, str(ref))
        click.echo(response.data.decode())
        return
    image = resolve(ref, app.config, access, platform)
    try:
        config = json.loads(fetch_config(image))
        if show_config:
            _print_json(config)
        else:
            tags = image.client.list_tags(ref.repository)
            _print_json(image_views.summary(str(ref), image.digest, image.manifest, config, tags))
    finally:
        image.client.close()


@cli.command("tags")
@access_options
@click.argument("repository")
@click.pass_obj
def tags_command(app: App, repository: str, tls_verify: bool | None, creds: str | None,
                 authfile: str | None) -> None:
    """List the tags of a repository in its registry (docker://REPO)."""
    text = repository.removeprefix(TRANSPORT)
    if "@" in text or ":" in text.rpartition("/")[2]:
        raise click.UsageError(f"{repository}: give a repository without a tag or digest")
    from ocitool.image.remote import client_for
    ref = parse_reference(text)
    client = client_for(ref.api_host, ref.repository, app.config, AccessOptions(tls_verify, creds, authfile))
    try:
        _print_json({"Repository": ref.name, "Tags": client.list_tags(ref.repository)})
    finally:
        client.close()


@cli.command("unpack")
@click.option("--rootless", is_flag=True, help="Unpack without root privileges (automatic when not root).")
@click.option("--pull", "pull_policy", type=click.Choice(PULL_POLICIES), default="missing", show_default=True,
              help="When to pull IMAGE into the store first.")
@platform_option
@access_options
@click.argument("image")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.pass_obj
def unpack_command(app: App, image: str, bundle: str, rootless: bool, pull_policy: str, platform_text: str | None,
                   tls_verify: bool | None, creds: str | None, authfile: str | None) -> None:
    """Unpack IMAGE into a runtime bundle directory BUNDLE (like umoci unpack).

    \b
    IMAGE is a reference in the store (pulled when missing, per --pull) or
    oci:LAYOUT[:REF], e.g. the output of skopeo copy. BUNDLE must not exist
    (or be empty); it gets rootfs/, config.json, sha256_<hex>.mtree and
    ocitool.json. runc, crun and 'ocitool runtime' can run it.
    Example: ocitool unpack busybox ./bundle && ocitool runtime run -b ./bundle box
    """
    from ocitool.bundle.unpack import unpack  # loaded only when needed: keeps 'pull' quick to start
    store, name = local_image(image, app.store, lambda: app.config, pull_policy,
                              AccessOptions(tls_verify, creds, authfile), _platform(platform_text),
                              _progress(quiet=False))
    result = unpack(store, name, Path(bundle), rootless=rootless or os.geteuid() != 0)
    click.echo(f"Unpacked {name} ({result.manifest_digest}) into {result.bundle}", err=True)


@cli.command("spec")
@click.option("--rootless", is_flag=True, help="A config for running as an unprivileged user.")
@click.option("--bundle", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Directory to write config.json into.")
def spec_command(rootless: bool, bundle: str) -> None:
    """Write a default config.json, like runc spec (no image needed)."""
    from ocitool.bundle.spec import default_spec, write_spec
    path = Path(bundle) / "config.json"
    if path.exists():
        raise OcitoolError(f"{path} already exists; remove it first")
    write_spec(Path(bundle), default_spec(rootless=rootless))


@cli.command("run", context_settings={"allow_interspersed_args": False})
@click.option("--rm", "remove", is_flag=True, help="Remove the container and its writable layer when it exits.")
@click.option("-e", "--env", multiple=True, metavar="K=V", help="Set an environment variable (K alone: take ours).")
@click.option("--env-file", multiple=True, type=click.Path(dir_okay=False), help="Read K=V lines from a file.")
@click.option("-w", "--workdir", help="Working directory inside the container.")
@click.option("-u", "--user", metavar="USER[:GROUP]", help="Name or id, resolved in the image's /etc/passwd.")
@click.option("--entrypoint", help="Replace the image's Entrypoint ('' clears it).")
@click.option("-v", "--volume", multiple=True, metavar="SRC:DST[:ro]", help="Bind-mount a host path.")
@click.option("--read-only", is_flag=True, help="Mount the container's root read-only.")
@click.option("--hostname", help="Container hostname [default: the container id].")
@click.option("--network", type=click.Choice(["host", "none"]), default="host", show_default=True,
              help="host: share ours; none: a new network namespace with only lo.")
@click.option("-m", "--memory", metavar="BYTES", help="Memory limit (b, k, m, g suffixes).")
@click.option("--pids-limit", type=int, help="Maximum number of processes.")
@click.option("--cpus", type=float, help="CPU quota in CPUs, e.g. 0.5.")
@click.option("--cap-add", multiple=True, help="Add a capability (or ALL).")
@click.option("--cap-drop", multiple=True, help="Drop a capability (or ALL).")
@click.option("-t", "--tty", is_flag=True, help="Give the container a terminal.")
@click.option("-i", "--interactive", is_flag=True, help="Keep stdin open for the container.")
@click.option("--name", help="Container name (an id otherwise).")
@click.option("--pull", "pull_policy", type=click.Choice(PULL_POLICIES), default="missing", show_default=True)
@platform_option
@click.argument("image")
@click.argument("command", nargs=-1)
@click.pass_obj
def run_command(app: App, image: str, command: tuple[str, ...], pull_policy: str, platform_text: str | None,
                **flags: Any) -> None:
    """Run COMMAND (default: the image's) in a new container from IMAGE: pull, unpack, run.

    \b
    The image is pulled when missing (--pull), unpacked once into a cache
    shared by later runs, and each run writes to its own overlay layer.
    As root the container gets Docker's default capabilities and seccomp
    profile; as another user it runs rootless, the caller mapped to root.
    Exit status: the container's; 125 when ocitool fails, 126 when the
    command cannot be executed, 127 when it is not found.
    Examples: ocitool run --rm busybox echo hi
              ocitool run -it busybox sh
    """
    from ocitool.run import RunOptions, parse_bytes, run_image  # the run stack is big: load it only here
    try:
        options = RunOptions(command=list(command), entrypoint=flags["entrypoint"], env=list(flags["env"]),
                             env_files=list(flags["env_file"]), workdir=flags["workdir"], user=flags["user"],
                             volumes=list(flags["volume"]), read_only=flags["read_only"],
                             hostname=flags["hostname"], network=flags["network"],
                             memory=parse_bytes(flags["memory"]) if flags["memory"] else None,
                             pids_limit=flags["pids_limit"], cpus=flags["cpus"], cap_add=list(flags["cap_add"]),
                             cap_drop=list(flags["cap_drop"]), tty=flags["tty"], interactive=flags["interactive"],
                             name=flags["name"], remove=flags["remove"])
        store, name = local_image(image, app.store, lambda: app.config, pull_policy, AccessOptions(),
                                  _platform(platform_text), _progress(quiet=False))
        code = run_image(app.root, store, name, options)
    except OcitoolError as exc:
        exc.exit_code = exc.exit_code if exc.exit_code in (126, 127) else RUN_FAILED
        raise
    raise click.exceptions.Exit(code)


@cli.command("ps")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_obj
def ps_command(app: App, output_format: str) -> None:
    """List containers kept by 'ocitool run' (runs without --rm)."""
    from ocitool.run import list_runs
    rows = list_runs(app.root)
    if output_format == "json":
        _print_json(rows)
        return
    click.echo(f"{'CONTAINER ID':<14} {'IMAGE':<40} {'COMMAND':<24} {'CREATED':<26} STATUS")
    for row in rows:
        status = row["status"] + (f" ({row['exit_code']})" if row.get("exit_code") is not None else "")
        click.echo(f"{row['id']:<14} {row['image']:<40} {' '.join(row['command'])[:24]:<24} "
                   f"{row['created']:<26} {status}")


@cli.command("rm")
@click.option("-f", "--force", is_flag=True, help="Stop the container first if it is running.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def rm_command(app: App, containers: tuple[str, ...], force: bool) -> None:
    """Remove containers kept by 'ocitool run', with their writable layers."""
    from ocitool.run import remove_run
    for container_id in containers:
        remove_run(app.root, container_id, force)
        click.echo(container_id)


@cli.command("prune")
@click.pass_obj
def prune_command(app: App) -> None:
    """Remove every container that is not running."""
    from ocitool.run import prune_runs
    for container_id in prune_runs(app.root):
        click.echo(container_id)


@cli.command("rmi")
@click.argument("images", nargs=-1, required=True)
@click.pass_obj
def rmi_command(app: App, images: tuple[str, ...]) -> None:
    """Remove images from the local store, and the blobs no other image uses."""
    store = app.store()
    for image in images:
        name = str(parse_reference(image))
        store.remove_ref(name)
        click.echo(f"Untagged: {name}")
    count, freed = store.gc()
    click.echo(f"Deleted {count} blobs ({human_size(freed)})")


@cli.command("gc")
@click.pass_obj
def gc_command(app: App) -> None:
    """Remove blobs that no image in the store references, and leftovers of interrupted pulls."""
    count, freed = app.store().gc()
    click.echo(f"Deleted {count} blobs ({human_size(freed)})")


@cli.command("runtime", add_help_option=False,
             context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def runtime_command(args: tuple[str, ...]) -> None:
    """The OCI runtime: runc's commands and flags (also the ocitool-runtime program).

    Example: ocitool runtime run --bundle ./bundle mybox   (see 'ocitool runtime --help')
    """
    from ocitool import cli_runtime
    cli_runtime.main(list(args), prog="ocitool runtime")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and turn failures into ``ocitool: error: ...`` and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    run_guarded(lambda: _click_main(args), lambda message: click.echo(f"ocitool: error: {message}", err=True),
                debug="debug" in args)


def _click_main(args: list[str]) -> int | None:
    """Run click without its own error printing and exits; its errors become ocitool's."""
    try:
        return cli.main(args=args, prog_name="ocitool", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        raise UsageError(exc.format_message() + hint, _usage_status(exc)) from None
    except click.ClickException as exc:
        error = OcitoolError(exc.format_message())
        error.exit_code = exc.exit_code
        raise error from None
    except click.Abort:
        raise KeyboardInterrupt from None


def _usage_status(exc: click.UsageError) -> int:
    """Docker's 125 for a bad ``run`` option, 2 (click's) elsewhere."""
    return RUN_FAILED if exc.ctx and exc.ctx.command.name == "run" else 2
