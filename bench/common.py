"""Shared helpers for ocitool's benchmarks (pull vs skopeo, later unpack vs umoci, run vs runc).

What lives here is tool-agnostic:

* ``BenchRegistry`` / ``start_registry``: the test suite's real ``docker-registry`` on a free
  loopback port, optionally with a storage directory that survives between bench runs;
* ``ImageCache`` / ``ensure_pushed``: build an image once, keep its blobs under
  ``bench/.cache/`` keyed by the build parameters, and push it only when the registry
  does not already hold it;
* ``Trial`` / ``command_trial`` / ``alternate``: time several tools in alternation, each run
  in a fresh empty directory, with setup and cleanup outside the timed region;
* ``track_cpu``: also record the child processes' user and system CPU time of a Trial;
* ``scratch_ext4``: a fresh loop-mounted ext4 to run file-heavy trials on (root only);
* ``median``, ``mib``, ``markdown_table``, ``machine_info``: reporting.

The bench scripts put ``tests/`` on ``sys.path`` (importing this module does it too) so the
registry, image builders and push client of ``tests/support`` are reused, not copied.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "bench"
CACHE_DIR = BENCH_DIR / ".cache"
TESTS_DIR = REPO_ROOT / "tests"
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"

if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

import requests  # noqa: E402  (after the sys.path setup, like the support imports)

from support.images import Blob, Image  # noqa: E402
from support.push import push_image  # noqa: E402
from support.registry import RegistryServer, free_port  # noqa: E402,F401  (re-exported)

MiB = 1024 * 1024
ACCEPT = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.oci.image.index.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json"])

# Variables that could point a tool under test at the user's real state or credentials, and
# PYTHONDONTWRITEBYTECODE: with it every run of a Python tool recompiles its own (non-pip-installed)
# sources (~30 ms for ocitool), which no installed copy does; tools are timed as installed.
CLEARED_ENV = ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "OCITOOL_CONFIG", "OCITOOL_ROOT",
               "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "DOCKER_CONFIG",
               "PYTHONDONTWRITEBYTECODE")


def log(message: str) -> None:
    """Progress messages go to stderr so stdout stays a pasteable report."""
    print(message, file=sys.stderr, flush=True)


# -- registry ------------------------------------------------------------------


class BenchRegistry(RegistryServer):
    """The tests' ``RegistryServer``, but with blob storage in ``storage_dir`` when given.

    ``RegistryServer.stop()`` deletes only its private temporary directory (config, log),
    so a storage directory outside it is kept and the next bench run starts with every
    image already pushed.
    """

    def __init__(self, storage_dir: Path | None = None) -> None:
        super().__init__()
        self.storage_dir = Path(storage_dir) if storage_dir else None

    def _config_yaml(self) -> str:
        config = json.loads(super()._config_yaml())
        if self.storage_dir is not None:
            self.storage_dir.mkdir(parents=True, exist_ok=True)
            config["storage"]["filesystem"]["rootdirectory"] = str(self.storage_dir)
        return json.dumps(config, indent=2)


def start_registry(storage_dir: Path | None = None) -> BenchRegistry:
    """A started open registry on ``127.0.0.1:<free port>``; use it as a context manager."""
    return BenchRegistry(storage_dir).start()


# -- image cache -----------------------------------------------------------------


def cache_key(name: str, params: dict[str, Any]) -> str:
    """A short stable key for an image recipe: ``name`` plus its JSON-able parameters."""
    text = json.dumps({"name": name, **params}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BlobInfo:
    """A blob's descriptor fields, known without loading the data."""

    media_type: str
    digest: str
    size: int


@dataclass(frozen=True)
class CachedImage:
    """An image whose blobs live in a cache directory; ``load()`` reads them into an Image."""

    directory: Path
    key: str
    manifest: BlobInfo
    config: BlobInfo
    layers: tuple[BlobInfo, ...]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """The manifest digest (what the registry reports for the tag)."""
        return self.manifest.digest

    @property
    def layer_bytes(self) -> int:
        """Total size of the layer blobs as stored in the registry (compressed if they are)."""
        return sum(layer.size for layer in self.layers)

    @property
    def total_bytes(self) -> int:
        """Config, layers and manifest: everything a pull transfers."""
        return self.layer_bytes + self.config.size + self.manifest.size

    def _blob(self, info: BlobInfo) -> Blob:
        return Blob(info.media_type, (self.directory / "blobs" / info.digest.partition(":")[2]).read_bytes())

    def load(self) -> Image:
        """The full in-memory Image, as ``push_image`` wants it."""
        return Image(self._blob(self.config), [self._blob(layer) for layer in self.layers],
                     self._blob(self.manifest))


class ImageCache:
    """Generated images on disk under ``root/<name>-<key>/``: build once, reuse forever.

    The key covers the recipe parameters, so changing a parameter (or bumping a
    ``version`` entry in them when the builder changes) makes a new entry.
    """

    def __init__(self, root: Path = CACHE_DIR / "images") -> None:
        self.root = Path(root)

    def get(self, name: str, params: dict[str, Any], build: Callable[[], Image]) -> CachedImage:
        """The cached image for ``(name, params)``, calling ``build()`` on a miss."""
        key = cache_key(name, params)
        directory = self.root / f"{name}-{key}"
        meta = directory / "image.json"
        if not meta.is_file():
            log(f"building image {name} ({key}) ...")
            started = time.monotonic()
            self._save(directory, build(), name, params)
            log(f"  built in {time.monotonic() - started:.1f}s, cached in {directory}")
        return self._load_meta(directory, key)

    def _save(self, directory: Path, image: Image, name: str, params: dict[str, Any]) -> None:
        """Write blobs and ``image.json`` to a temporary directory, then rename it into place."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.root))
        try:
            (tmp / "blobs").mkdir()
            for blob in [image.manifest, *image.blobs]:
                (tmp / "blobs" / blob.digest.partition(":")[2]).write_bytes(blob.data)

            def info(blob: Blob) -> dict[str, Any]:
                return {"media_type": blob.media_type, "digest": blob.digest, "size": blob.size}

            (tmp / "image.json").write_text(json.dumps({
                "name": name, "params": params, "manifest": info(image.manifest),
                "config": info(image.config), "layers": [info(layer) for layer in image.layers],
            }, indent=2))
            shutil.rmtree(directory, ignore_errors=True)
            os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @staticmethod
    def _load_meta(directory: Path, key: str) -> CachedImage:
        meta = json.loads((directory / "image.json").read_text())
        return CachedImage(directory, key, BlobInfo(**meta["manifest"]), BlobInfo(**meta["config"]),
                           tuple(BlobInfo(**layer) for layer in meta["layers"]), meta.get("params", {}))


def registry_has(registry_url: str, repository: str, tag: str, image: CachedImage) -> bool:
    """True when ``repository:tag`` is ``image`` and every blob it references is present."""
    response = requests.head(f"{registry_url}/v2/{repository}/manifests/{tag}",
                             headers={"Accept": ACCEPT}, timeout=10)
    if response.status_code != 200 or response.headers.get("Docker-Content-Digest") != image.digest:
        return False
    return all(requests.head(f"{registry_url}/v2/{repository}/blobs/{blob.digest}", timeout=10).status_code == 200
               for blob in (image.config, *image.layers))


def ensure_pushed(registry: RegistryServer, repository: str, tag: str, image: CachedImage) -> str:
    """Push ``image`` as ``repository:tag`` unless the (persistent) registry already has it.

    Returns the pullable reference ``127.0.0.1:PORT/repository:tag``.
    """
    if registry_has(registry.url, repository, tag, image):
        log(f"registry already holds {repository}:{tag}")
    else:
        log(f"pushing {repository}:{tag} ({mib(image.total_bytes):.1f} MiB) ...")
        started = time.monotonic()
        push_image(registry.url, repository, tag, image.load())
        log(f"  pushed in {time.monotonic() - started:.1f}s")
    return f"{registry.host}/{repository}:{tag}"


# -- timing --------------------------------------------------------------------


@dataclass
class Trial:
    """One timed operation: ``setup()`` (untimed) -> ``run(state)`` (timed) -> ``cleanup(state)`` (untimed).

    ``check(state, result)`` runs untimed after ``run`` and before ``cleanup``, to make sure a
    fast run was also a correct one; it should raise on failure.
    """

    run: Callable[[Any], Any]
    setup: Callable[[], Any] = lambda: None
    check: Callable[[Any, Any], None] = lambda state, result: None
    cleanup: Callable[[Any], None] = lambda state: None
    describe: str = ""

    def timed(self) -> float:
        """Run once and return the wall-clock seconds of ``run`` alone."""
        state = self.setup()
        try:
            started = time.perf_counter()
            result = self.run(state)
            elapsed = time.perf_counter() - started
            self.check(state, result)
        finally:
            self.cleanup(state)
        return elapsed


def clean_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without state/credential pointers, with ``HOME=home``."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    env["HOME"] = str(home)
    env.update(extra or {})
    return env


def run_checked(argv: Sequence[str], env: dict[str, str] | None = None,
                timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """Run a command capturing output; raise with its output when it fails."""
    result = subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {result.returncode}\n"
                           f"--- stdout ---\n{result.stdout[-2000:]}\n--- stderr ---\n{result.stderr[-2000:]}")
    return result


def command_trial(argv: Callable[[Path], Sequence[str]], workdir: Path,
                  env: dict[str, str] | None = None,
                  check: Callable[[Path, subprocess.CompletedProcess[str]], None] | None = None,
                  sync: bool = True) -> Trial:
    """A Trial running ``argv(dest)`` where ``dest`` is a fresh empty directory under ``workdir``.

    The directory is removed after each run, and with ``sync`` dirty pages are flushed
    before the next run starts, so one run's writeback does not slow the next.
    """

    def setup() -> Path:
        workdir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="run-", dir=workdir))

    def cleanup(dest: Path) -> None:
        shutil.rmtree(dest, ignore_errors=True)
        if sync:
            os.sync()

    return Trial(run=lambda dest: run_checked(argv(dest), env=env), setup=setup,
                 check=(lambda dest, result: check(dest, result)) if check else (lambda d, r: None),
                 cleanup=cleanup, describe=shlex.join(argv(Path("DEST"))))


def alternate(commands: dict[str, Trial | Callable[[], Any]], runs: int, warmup: int = 1,
              rotate: bool = True) -> dict[str, list[float]]:
    """Time each command ``runs`` times, interleaved, and return name -> seconds per run.

    Round ``i`` runs every command once; with ``rotate`` the starting command moves by one
    each round (A B, B A, A B, ...) so no tool always runs right after the same other
    tool. ``warmup`` extra rounds run first and are not recorded (page cache, .pyc files,
    registry warm-up). A plain callable is timed as a whole.
    """
    trials = {name: cmd if isinstance(cmd, Trial) else Trial(run=lambda _state, f=cmd: f())
              for name, cmd in commands.items()}
    names = list(trials)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_no in range(warmup + runs):
        shift = round_no % len(names) if rotate else 0
        for name in names[shift:] + names[:shift]:
            elapsed = trials[name].timed()
            label = "warm-up" if round_no < warmup else f"run {round_no - warmup + 1}/{runs}"
            log(f"  {label:>10}  {name:<28} {elapsed:8.3f}s")
            if round_no >= warmup:
                times[name].append(elapsed)
    return times


def track_cpu(trial: Trial) -> list[tuple[float, float]]:
    """Make ``trial`` also record the (user, system) CPU seconds of the child processes its
    ``run`` waits for; returns the list each run (warm-up ones included) appends to."""
    samples: list[tuple[float, float]] = []
    inner = trial.run

    def run(state: Any) -> Any:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = inner(state)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        samples.append((after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime))
        return result

    trial.run = run
    return samples


@contextlib.contextmanager
def scratch_ext4(parent: Path, size: int = 4 << 30) -> Iterator[Path]:
    """A fresh empty ext4 file system (mkfs defaults, so journaled) loop-mounted on a
    temporary directory under ``parent`` for the duration of the block; needs root.

    For benchmarks that create and delete many files: the host's file system may behave
    unlike a typical one (ext4 without a journal, at every file creation, skips each free
    inode deleted in the last 1-6 minutes, reading its inode-table entry to find out), and
    other processes' activity on it adds noise.
    The backing file is sparse and removed afterwards.
    """
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="ext4-", dir=parent))
    image, mountpoint = tmp / "fs.img", tmp / "mnt"
    try:
        mountpoint.mkdir()
        with open(image, "wb") as f:
            f.truncate(size)
        run_checked(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image)])
        run_checked(["mount", "-o", "loop", str(image), str(mountpoint)])
        try:
            yield mountpoint
        finally:
            run_checked(["umount", str(mountpoint)])
    finally:
        if not os.path.ismount(mountpoint):
            shutil.rmtree(tmp, ignore_errors=True)


def median(values: Iterable[float]) -> float:
    """The median (mean of the middle two for an even count)."""
    return statistics.median(list(values))


def mib(nbytes: float) -> float:
    """Bytes -> MiB."""
    return nbytes / MiB


def throughput(nbytes: float, seconds: float) -> float:
    """MiB/s."""
    return mib(nbytes) / seconds if seconds > 0 else float("inf")


def yes_no(ok: bool) -> str:
    return "yes" if ok else "**no**"


# -- reporting -------------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table with padded columns."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |"

    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(row) for row in cells[1:])])


def spread(values: Sequence[float]) -> str:
    """``min-max`` of a run series, for a feel of the noise."""
    return f"{min(values):.2f}-{max(values):.2f}"


def print_header(name: str, argv: Sequence[str] | None, versions: dict[str, str],
                 machine_note: str = "") -> None:
    """The start of a results section: ``## name (date)``, then the machine, tools and command lines."""
    info = machine_info()
    shown = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    print(f"## {name} ({dt.date.today().isoformat()})\n")
    print(f"- machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram']} RAM, kernel {info['kernel']}{machine_note}")
    print(f"- tools: {', '.join(f'{tool} {version}' for tool, version in versions.items())}")
    print(f"- command: `{f'/work/main/.venv/bin/python bench/{name}.py {shown}'.rstrip()}`")


def machine_info() -> dict[str, str]:
    """nproc, RAM, kernel and CPU model, for the results file."""
    info = {"nproc": str(os.cpu_count()), "kernel": platform.release()}
    try:
        with open("/proc/meminfo") as f:
            kib = int(next(line for line in f if line.startswith("MemTotal:")).split()[1])
        info["ram"] = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        info["ram"] = "?"
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = "?"
    return info


def git_revision(repo: Path = REPO_ROOT, paths: Sequence[str] = ()) -> str:
    """``<short commit>`` of ``repo``, with ``+dirty`` when ``paths`` (default: all) have local changes."""
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", *paths],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (commit or "?") + ("+dirty" if dirty else "")


def tool_version(argv: Sequence[str]) -> str:
    """The first line a ``--version`` style command prints, or ``?``."""
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"
