"""The ``ocitool`` command line: parse, call a stage, print. No logic of its own.

Global flags come first, then one command (parsed by :mod:`ocitool.cli_flags`), whose stage
alone is imported: ``ocitool run`` of a cached image is mostly start-up, and ``pull`` should
not wait for the extraction code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ocitool import __version__, log
from ocitool.cli_common import run_guarded
from ocitool.cli_flags import Arg, Command, Flag, Program
from ocitool.config import default_root, load_config
from ocitool.errors import OcitoolError, UsageError
from ocitool.image.access import PULL_POLICIES

TYPE_CHECKING = False  # type checkers treat this as True; these imports serve annotations only
if TYPE_CHECKING:
    from types import SimpleNamespace
    from typing import Any

    from ocitool.config import Config
    from ocitool.image.access import AccessOptions
    from ocitool.image.platform import Platform
    from ocitool.image.reference import Reference
    from ocitool.image.store import ImageStore
    from ocitool.progress import Progress

PROG = "ocitool"
DESCRIPTION = """\
Pull OCI images, unpack them into bundles, and run them.

Image stage:   pull, images, inspect, tags, rmi, gc
Bundle stage:  unpack, spec
One-shot:      run, ps, rm, prune
Runtime stage: runtime SUBCOMMAND (runc's commands; also the ocitool-runtime program)"""
LOG_LEVELS = {"debug": log.DEBUG, "info": log.INFO, "warning": log.WARNING, "error": log.ERROR}
RUN_FAILED = 125  # Docker's status for "the tool failed, not the container"
TRANSPORT = "docker://"
FORMATS = ("table", "json")


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
        from ocitool.image.store import ImageStore
        return ImageStore.open(self.root / "images")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command and turn failures into ``ocitool: error: ...`` and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    run_guarded(lambda: _dispatch(args), lambda message: print(f"{PROG}: error: {message}", file=sys.stderr),
                debug="debug" in args)


def _dispatch(args: list[str]) -> int | None:
    """Parse the global flags and the command's, then run the command."""
    options = Program(PROG, DESCRIPTION, GLOBAL_FLAGS, _COMMANDS, version=f"{PROG}, version {__version__}").parse(args)
    if options is None:
        return 0
    log.configure(LOG_LEVELS[options.log_level], log.stderr_sink(PROG))
    options.app = App(Path(options.root) if options.root else default_root(), options.config_file)
    return options.handler(options)


# ---------------------------------------------------------------- shared flags

def _boolean(text: str) -> bool:
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.lower())
    if value is None:
        raise ValueError(f"{text!r} is not true or false")
    return value


GLOBAL_FLAGS = [
    Flag("--root", "State directory [default: $OCITOOL_ROOT, /var/lib/ocitool for root, "
                   "~/.local/share/ocitool otherwise].", metavar="DIR"),
    Flag("--config", "TOML config file [default: $OCITOOL_CONFIG, ~/.config/ocitool/config.toml, "
                     "/etc/ocitool/config.toml].", dest="config_file", metavar="FILE"),
    Flag("--log-level", "How much to log on stderr; 'debug' also shows tracebacks [default: warning].",
         choices=tuple(LOG_LEVELS), default="warning"),
]
ACCESS_FLAGS = [  # for commands that talk to registries
    Flag("--tls-verify", "Require HTTPS with a verified certificate [default: true, false for loopback and "
                         "'insecure' registries].", convert=_boolean, metavar="true|false"),
    Flag("--creds", "Credentials for the registry.", metavar="USER:PASS"),
    Flag("--authfile", "Auth file (containers auth.json or Docker config.json format).", metavar="FILE"),
]
PLATFORM = Flag("--platform", "Platform to choose from a multi-platform image [default: this host's].",
                metavar="OS/ARCH[/VARIANT]")
PULL = Flag("--pull", "When to pull IMAGE into the store first [default: missing].", choices=PULL_POLICIES,
            default="missing")
FORMAT = Flag("--format", "[default: table]", choices=FORMATS, default="table")
IMAGE = Arg("IMAGE")


def _access(options: SimpleNamespace) -> AccessOptions:
    from ocitool.image.access import AccessOptions
    return AccessOptions(options.tls_verify, options.creds, options.authfile)


def _platform(options: SimpleNamespace) -> Platform | None:
    if not options.platform:
        return None
    from ocitool.image.platform import parse_platform  # only --platform needs it
    return parse_platform(options.platform)


def _progress(quiet: bool) -> Progress:
    """Bars on a terminal, lines in a pipe, nothing when quiet."""
    from ocitool.progress import LineProgress, NoProgress, TerminalProgress
    if quiet:
        return NoProgress()
    return TerminalProgress() if sys.stderr.isatty() else LineProgress()


def _remote_ref(text: str) -> Reference:
    from ocitool.image.reference import parse_reference
    return parse_reference(text.removeprefix(TRANSPORT))


def _local_name(text: str) -> str:
    from ocitool.image.reference import parse_reference
    return str(parse_reference(text))


def _print_json(document: Any) -> None:
    import json
    print(json.dumps(document, indent=4))


def _human_size(size: int) -> str:
    from ocitool.progress import human_size
    return human_size(size)


def _table(rows: list[tuple[str, ...]]) -> None:
    """Columns as wide as their widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


# ---------------------------------------------------------------- image stage

def pull_command(options: SimpleNamespace) -> None:
    """Pull IMAGE from its registry into the local store and print its digest.

    IMAGE is a reference such as busybox, quay.io/org/app:1.2,
    localhost:5000/x@sha256:..., optionally prefixed with docker://.
    Mirrors and insecure registries come from the config file. Proxies
    come from https_proxy, http_proxy and no_proxy; SSL_CERT_FILE names
    the CAs to trust instead of the system's.
    Example: ocitool pull --platform linux/arm64 alpine:3.20
    """
    from ocitool.image.pull import pull  # the HTTP stack: loaded only by commands that need it
    app = options.app
    result = pull(_remote_ref(options.image), app.store(), app.config, _access(options), _platform(options),
                  _progress(options.quiet))
    if not options.quiet:
        print(f"Pulled {result.name}" + (f" ({result.platform})" if result.platform else ""), file=sys.stderr)
        if result.registry_digest != result.digest:
            print(f"Converted Docker manifest {result.registry_digest} to OCI", file=sys.stderr)
    print(result.digest)


def images_command(options: SimpleNamespace) -> None:
    """List the images in the local store."""
    from ocitool.image.inspect import list_images
    rows = list_images(options.app.store())
    if options.format == "json":
        _print_json(rows)
        return
    _table([("REPOSITORY", "TAG", "DIGEST", "PLATFORM", "CREATED", "SIZE")] +
           [(r["repository"], r["tag"], r["digest"].partition(":")[2][:12], r["platform"],
             (r["created"] or "")[:19].replace("T", " "), _human_size(r["size"])) for r in rows])


def inspect_command(options: SimpleNamespace) -> None:
    """Show an image's details: a local one, or with docker://REF straight from its registry.

    Examples: ocitool inspect busybox
              ocitool inspect --config busybox
              ocitool inspect --raw docker://localhost:5000/app:1.0
    """
    from ocitool.image import inspect as image_views
    if options.image.startswith(TRANSPORT):
        _inspect_remote(options)
        return
    local = image_views.load_local(options.app.store(), _local_name(options.image))
    if options.raw:
        print(local.manifest_bytes.decode())
    elif options.show_config:
        _print_json(local.config)
    else:
        _print_json(image_views.summary(local.name, local.descriptor["digest"], local.manifest, local.config))


def _inspect_remote(options: SimpleNamespace) -> None:
    import json

    from ocitool.image.inspect import summary
    from ocitool.image.manifest import decode_manifest
    from ocitool.image.pull import fetch_config, resolve
    from ocitool.image.remote import open_manifest
    ref, config, access = _remote_ref(options.image), options.app.config, _access(options)
    if options.raw:
        client, response = open_manifest(ref, config, access)
        client.close()
        decode_manifest(response.data, response.media_type, str(ref))
        print(response.data.decode())
        return
    image = resolve(ref, config, access, _platform(options))
    try:
        image_config = json.loads(fetch_config(image))
        if options.show_config:
            _print_json(image_config)
        else:
            tags = image.client.list_tags(ref.repository)
            _print_json(summary(str(ref), image.digest, image.manifest, image_config, tags))
    finally:
        image.client.close()


def tags_command(options: SimpleNamespace) -> None:
    """List the tags of a repository in its registry (docker://REPO)."""
    from ocitool.image.remote import client_for
    text = options.repository.removeprefix(TRANSPORT)
    if "@" in text or ":" in text.rpartition("/")[2]:
        raise UsageError(f"{options.repository}: give a repository without a tag or digest")
    ref = _remote_ref(text)
    client = client_for(ref.api_host, ref.repository, options.app.config, _access(options))
    try:
        _print_json({"Repository": ref.name, "Tags": client.list_tags(ref.repository)})
    finally:
        client.close()


def rmi_command(options: SimpleNamespace) -> None:
    """Remove images from the local store, and the blobs no other image uses."""
    store = options.app.store()
    for image in options.images:
        name = _local_name(image)
        store.remove_ref(name)
        print(f"Untagged: {name}")
    count, freed = store.gc()
    print(f"Deleted {count} blobs ({_human_size(freed)})")


def gc_command(options: SimpleNamespace) -> None:
    """Remove blobs that no image in the store references, and leftovers of interrupted pulls."""
    count, freed = options.app.store().gc()
    print(f"Deleted {count} blobs ({_human_size(freed)})")


# ---------------------------------------------------------------- bundle stage

def _local_image(options: SimpleNamespace, access: AccessOptions | None = None) -> tuple[ImageStore, str]:
    """The layout and ref holding ``options.image``, pulled first per ``--pull``."""
    from ocitool.image.access import AccessOptions
    from ocitool.image.source import local_image
    app = options.app
    return local_image(options.image, app.store, lambda: app.config, options.pull, access or AccessOptions(),
                       _platform(options), lambda: _progress(quiet=False))


def unpack_command(options: SimpleNamespace) -> None:
    """Unpack IMAGE into a runtime bundle directory BUNDLE (like umoci unpack).

    IMAGE is a reference in the store (pulled when missing, per --pull) or
    oci:LAYOUT[:REF], e.g. the output of skopeo copy. BUNDLE must not exist
    (or be empty); it gets rootfs/, config.json, sha256_<hex>.mtree and
    ocitool.json. runc, crun and 'ocitool runtime' can run it.
    Example: ocitool unpack busybox ./bundle && ocitool runtime run -b ./bundle box
    """
    from ocitool.bundle.unpack import unpack  # loaded only when needed: keeps 'pull' quick to start
    store, name = _local_image(options, _access(options))
    result = unpack(store, name, Path(options.bundle), rootless=options.rootless or os.geteuid() != 0)
    print(f"Unpacked {name} ({result.manifest_digest}) into {result.bundle}", file=sys.stderr)


def spec_command(options: SimpleNamespace) -> None:
    """Write a default config.json, like runc spec (no image needed)."""
    from ocitool.bundle.spec import write_new_spec
    write_new_spec(Path(options.bundle), options.rootless)


def run_command(options: SimpleNamespace) -> int:
    """Run COMMAND (default: the image's) in a new container from IMAGE: pull, unpack, run.

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
        run_options = RunOptions(command=options.command_args, entrypoint=options.entrypoint, env=options.env,
                                 env_files=options.env_file, workdir=options.workdir, user=options.user,
                                 volumes=options.volume, read_only=options.read_only, hostname=options.hostname,
                                 network=options.network,
                                 memory=parse_bytes(options.memory) if options.memory else None,
                                 pids_limit=options.pids_limit, cpus=options.cpus, cap_add=options.cap_add,
                                 cap_drop=options.cap_drop, tty=options.tty, interactive=options.interactive,
                                 name=options.name, remove=options.rm)
        return run_image(options.app.root, lambda: _local_image(options), run_options)
    except OcitoolError as exc:
        exc.exit_code = exc.exit_code if exc.exit_code in (126, 127) else RUN_FAILED
        raise


def ps_command(options: SimpleNamespace) -> None:
    """List containers kept by 'ocitool run' (runs without --rm)."""
    from ocitool.run import list_runs
    rows = list_runs(options.app.root)
    if options.format == "json":
        _print_json(rows)
        return
    print(f"{'CONTAINER ID':<14} {'IMAGE':<40} {'COMMAND':<24} {'CREATED':<26} STATUS")
    for row in rows:
        status = row["status"] + (f" ({row['exit_code']})" if row.get("exit_code") is not None else "")
        print(f"{row['id']:<14} {row['image']:<40} {' '.join(row['command'])[:24]:<24} "
              f"{row['created']:<26} {status}")


def rm_command(options: SimpleNamespace) -> None:
    """Remove containers kept by 'ocitool run', with their writable layers."""
    from ocitool.run import remove_run
    for container_id in options.containers:
        remove_run(options.app.root, container_id, options.force)
        print(container_id)


def prune_command(options: SimpleNamespace) -> None:
    """Remove every container that is not running."""
    from ocitool.run import prune_runs
    for container_id in prune_runs(options.app.root):
        print(container_id)


def runtime_command(options: SimpleNamespace) -> None:
    """The OCI runtime: runc's commands and flags (also the ocitool-runtime program).

    Example: ocitool runtime run --bundle ./bundle mybox   (see 'ocitool runtime --help')
    """
    from ocitool import cli_runtime
    cli_runtime.main(options.arguments, prog=f"{PROG} runtime")


RUN_FLAGS = [
    Flag("--rm", "Remove the container and its writable layer when it exits.", kind="switch"),
    Flag("-e, --env", "Set an environment variable (K alone: take ours).", kind="list", metavar="K=V"),
    Flag("--env-file", "Read K=V lines from a file.", kind="list", metavar="FILE"),
    Flag("-w, --workdir", "Working directory inside the container.", metavar="DIR"),
    Flag("-u, --user", "Name or id, resolved in the image's /etc/passwd.", metavar="USER[:GROUP]"),
    Flag("--entrypoint", "Replace the image's Entrypoint ('' clears it).", metavar="CMD"),
    Flag("-v, --volume", "Bind-mount a host path.", kind="list", metavar="SRC:DST[:ro]"),
    Flag("--read-only", "Mount the container's root read-only.", kind="switch"),
    Flag("--hostname", "Container hostname [default: the container id].", metavar="NAME"),
    Flag("--network", "host: share ours; none: a new network namespace with only lo [default: host].",
         choices=("host", "none"), default="host"),
    Flag("-m, --memory", "Memory limit (b, k, m, g suffixes).", metavar="BYTES"),
    Flag("--pids-limit", "Maximum number of processes.", convert=int, metavar="N"),
    Flag("--cpus", "CPU quota in CPUs, e.g. 0.5.", convert=float, metavar="N"),
    Flag("--cap-add", "Add a capability (or ALL).", kind="list", metavar="CAP"),
    Flag("--cap-drop", "Drop a capability (or ALL).", kind="list", metavar="CAP"),
    Flag("-t, --tty", "Give the container a terminal.", kind="switch"),
    Flag("-i, --interactive", "Keep stdin open for the container.", kind="switch"),
    Flag("--name", "Container name (an id otherwise).", metavar="NAME"),
    PULL, PLATFORM,
]

_COMMANDS = {
    "pull": Command(pull_command, [PLATFORM, *ACCESS_FLAGS,
                                   Flag("-q, --quiet", "Print only the digest, no progress.", kind="switch")],
                    [IMAGE]),
    "images": Command(images_command, [FORMAT]),
    "inspect": Command(inspect_command, [
        Flag("--raw", "Print the manifest exactly as stored (or as the registry sent it).", kind="switch"),
        Flag("--config", "Print the image's config JSON.", kind="switch", dest="show_config"),
        PLATFORM, *ACCESS_FLAGS], [IMAGE]),
    "tags": Command(tags_command, ACCESS_FLAGS, [Arg("REPOSITORY")]),
    "unpack": Command(unpack_command, [
        Flag("--rootless", "Unpack without root privileges (automatic when not root).", kind="switch"),
        PULL, PLATFORM, *ACCESS_FLAGS], [IMAGE, Arg("BUNDLE")]),
    "spec": Command(spec_command, [
        Flag("--rootless", "A config for running as an unprivileged user.", kind="switch"),
        Flag("--bundle", "Directory to write config.json into [default: .].", default=".", metavar="DIR")]),
    "run": Command(run_command, RUN_FLAGS, [IMAGE, Arg("COMMAND", "*", dest="command_args",
                                                       help="The command and its arguments.")],
                   usage_status=RUN_FAILED),  # Docker's status for a bad run flag
    "ps": Command(ps_command, [FORMAT]),
    "rm": Command(rm_command, [Flag("-f, --force", "Stop the container first if it is running.", kind="switch")],
                  [Arg("CONTAINER", "+", dest="containers")]),
    "prune": Command(prune_command),
    "rmi": Command(rmi_command, [], [Arg("IMAGE", "+", dest="images")]),
    "gc": Command(gc_command),
    "runtime": Command(runtime_command, raw=True),
}
