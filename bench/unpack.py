#!/usr/bin/env python3
"""Benchmark ``ocitool unpack`` against ``umoci unpack``, as root and with ``--rootless``.

Two images, built here, pushed to a loopback ``docker-registry`` and pulled once (untimed)
into one ocitool store, whose ``images/`` directory is an OCI layout umoci reads with the
same ref names:

* ``debian``: a ``debootstrap --variant=minbase bookworm`` root filesystem, cleaned like the
  official image (no ``.deb`` files, apt lists or apt caches, empty ``/dev``), in 3 gzip layers,
  lowest first: everything else (binaries and libraries), ``usr/share`` (docs, perl modules,
  zoneinfo...: thousands of small files), then ``etc`` + ``var``. Where debootstrap cannot run (no mirror), the
  image is made from a subset of this machine's own files instead and labelled so.
* ``large``: 4 uncompressed layers of one 255 MiB random file each (~1 GiB): the same
  recipe, and so the same cache entry and registry blobs, as ``bench/pull.py``'s image.

Each timed run unpacks into ``<fresh empty dir>/bundle``; the directory is removed and
``sync``ed outside the timed region. By default (as root) the bundles go to a fresh ext4
file system (mkfs defaults: journaled) loop-mounted for the run, not to the file system
holding the repository: on a host whose ext4 has no journal, every file creation skips
(and reads) each inode freed in the last 1-6 minutes, so deleting one run's bundle slows
the next run's file creation by up to ~20x for both tools, by an amount that depends on
the deletions of every other process too. ``--bundle-fs work`` measures there anyway. The four commands (ocitool, umoci, each with and
without ``--rootless``; as root, ``--rootless`` only changes what the tools do) alternate,
the first one rotating each round, after one untimed warm-up round. Both tools write their
mtree manifest (sha256 of every file) as part of the unpack, so it is in the time.

Targets (ratio of medians, per mode): ocitool <= 0.5x umoci on ``debian``, <= 1.0x on ``large``.

The built images live in ``bench/.cache/images/`` and the registry storage in
``bench/.cache/registry/`` (shared with bench/pull.py), so only the first run pays for
debootstrap (~30 s with a nearby mirror), building and pushing.

    .venv/bin/python bench/unpack.py [--runs N] [--quick] [--only debian|large] [--warmup N]
                                     [--bundle-fs ext4-loop|work] [--check]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (CACHE_DIR, MiB, VENV_PYTHON, CachedImage, ImageCache, Trial, alternate,  # noqa: E402
                    clean_env, command_trial, ensure_pushed, git_revision, log, print_header, markdown_table, median,
                    mib, run_checked, scratch_ext4, spread, start_registry, tool_version, track_cpu, yes_no)
from support.images import Dir, Entry, File, Hardlink, Image, Symlink, big_random_image, make_image, tar_layer  # noqa: E402,E501

REGISTRY_STORAGE = CACHE_DIR / "registry"
WORK_DIR = CACHE_DIR / "work"
RECIPE_VERSION = 1          # bump when a builder below changes what it produces
TARGETS = {"debian": 0.5, "large": 1.0}  # ocitool median / umoci median must be <= this, in each mode
MODES = ("root", "rootless")
TOOLS = ("ocitool", "umoci")

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# Layer of each path: the first prefix it falls under decides; everything else is layer 0.
DEBIAN_LAYERS = (("usr/share",), ("etc", "var"))
# What the official debian images remove after debootstrap ("apt-get clean", no apt lists);
# device nodes (and sockets) are never put in a layer: image builders leave /dev empty.
DEBIAN_DROPPED_UNDER = ("var/cache/apt/archives", "var/lib/apt/lists")
DEBIAN_DROPPED_SUFFIXES = (".deb", ".bin")  # the latter: var/cache/apt/{src,}pkgcache.bin
# The fallback without debootstrap: these trees of this machine (thousands of files).
HOST_TREES = ("etc", "usr/lib/python3", "usr/share/perl", "usr/share/zoneinfo", "usr/share/i18n")


# -- images ----------------------------------------------------------------------


class DebootstrapFailed(RuntimeError):
    """debootstrap is missing or could not build the root filesystem."""


def _dropped(rel: str) -> bool:
    """Whether a path is left out of the debian layers (what the official image removes)."""
    if rel.startswith("dev/"):
        return True
    if rel.startswith("var/cache/apt/") and rel.endswith(DEBIAN_DROPPED_SUFFIXES):
        return True
    return any(rel.startswith(f"{prefix}/") for prefix in DEBIAN_DROPPED_UNDER)


def _layer_of(rel: str, rules: Sequence[Sequence[str]]) -> int:
    for index, prefixes in enumerate(rules, start=1):
        if any(rel == p or rel.startswith(f"{p}/") for p in prefixes):
            return index
    return 0


def tree_layers(root: Path, rules: Sequence[Sequence[str]], include: Sequence[str] | None = None,
                drop: Callable[[str], bool] = lambda rel: False) -> list[bytes]:
    """The tree under ``root`` as ``len(rules) + 1`` layer tars (owners, modes, links kept).

    A path goes to layer ``i`` (1-based) when the ``i``-th ``rules`` entry holds one of its
    prefixes, else to layer 0, the lowest (the base: binaries and libraries). Each layer lists its
    entries' parent directories itself, as real layers do. A hard link whose target went
    to another layer becomes a copy; device nodes, fifos and sockets are skipped.
    ``include`` limits the walk to those subtrees of ``root``.
    """
    layers: list[list[Entry]] = [[] for _ in range(len(rules) + 1)]
    listed: list[set[str]] = [set() for _ in layers]
    first_link: dict[tuple[int, int], tuple[int, str]] = {}

    def add_parents(index: int, rel: str) -> None:
        parts = rel.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            if parent not in listed[index]:
                info = os.lstat(root / parent)
                layers[index].append(Dir(parent, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid))
                listed[index].add(parent)

    def add(rel: str) -> None:
        if drop(rel):
            return
        info = os.lstat(root / rel)
        index = _layer_of(rel, rules)
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISDIR(info.st_mode):
            add_parents(index, rel)
            if rel not in listed[index]:
                layers[index].append(Dir(rel, mode, info.st_uid, info.st_gid))
                listed[index].add(rel)
            return
        if stat.S_ISLNK(info.st_mode):
            add_parents(index, rel)
            layers[index].append(Symlink(rel, os.readlink(root / rel)))
        elif stat.S_ISREG(info.st_mode):
            add_parents(index, rel)
            earlier = first_link.get((info.st_dev, info.st_ino)) if info.st_nlink > 1 else None
            if earlier is not None and earlier[0] == index:
                layers[index].append(Hardlink(rel, earlier[1]))
                return
            try:
                content = (root / rel).read_bytes()
            except PermissionError:
                return
            layers[index].append(File(rel, content, mode, info.st_uid, info.st_gid))
            if info.st_nlink > 1:
                first_link.setdefault((info.st_dev, info.st_ino), (index, rel))

    for top in include or [""]:
        for dirpath, dirnames, filenames in os.walk(root / top):
            dirnames.sort()
            base = os.path.relpath(dirpath, root)
            prefix = "" if base == "." else f"{base}/"
            if prefix:
                add(prefix[:-1])
            for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
                add(prefix + name)
    return [tar_layer(entries) for entries in layers]


def debootstrap_image(suite: str, mirror: str) -> Image:
    """``debootstrap --variant=minbase`` into a temporary directory, then 3 gzip layers of it."""
    if shutil.which("debootstrap") is None:
        raise DebootstrapFailed("debootstrap is not installed (apt-get install -y debootstrap)")
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=WORK_DIR))
    try:
        log(f"  debootstrap --variant=minbase {suite} ({mirror}) ...")
        try:
            run_checked(["debootstrap", "--variant=minbase", suite, str(scratch / "rootfs"), mirror], timeout=1800)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            raise DebootstrapFailed(str(exc)) from None
        layers = tree_layers(scratch / "rootfs", DEBIAN_LAYERS, drop=_dropped)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return make_image(layers, compression="gzip",
                      config_extra={"Cmd": ["bash"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                                                             "/usr/bin:/sbin:/bin"]})


def host_files_image() -> Image:
    """The fallback "realistic" image: subsets of this machine's own tree, 3 gzip layers."""
    layers = tree_layers(Path("/"), DEBIAN_LAYERS, include=[t for t in HOST_TREES if os.path.isdir(f"/{t}")])
    return make_image(layers, compression="gzip", config_extra={"Cmd": ["bash"]})


@dataclass(frozen=True)
class Subject:
    """One benchmark image, once it is cached."""

    name: str       # "debian" or "large": --only value and repository suffix
    image: CachedImage
    label: str      # completed with the file count once a bundle has been seen


def debian_subject(cache: ImageCache) -> Subject:
    params = {"version": RECIPE_VERSION, "source": "debootstrap", "variant": "minbase", "suite": DEBIAN_SUITE,
              "layers": DEBIAN_LAYERS, "dropped": [DEBIAN_DROPPED_UNDER, DEBIAN_DROPPED_SUFFIXES],
              "compression": "gzip"}
    try:
        image = cache.get("unpack-debian", params, lambda: debootstrap_image(DEBIAN_SUITE, DEBIAN_MIRROR))
        what = f"debian: debootstrap minbase {DEBIAN_SUITE}"
    except DebootstrapFailed as exc:
        log(f"debootstrap failed, using this machine's files instead:\n{exc}")
        params = {"version": RECIPE_VERSION, "source": "host", "trees": HOST_TREES, "layers": DEBIAN_LAYERS,
                  "compression": "gzip"}
        image = cache.get("unpack-hostfiles", params, host_files_image)
        what = "debian: host files (no debootstrap)"
    return Subject("debian", image, f"{what}, {len(image.layers)} gzip layers, {mib(image.layer_bytes):.1f} MiB gzip")


def large_subject(cache: ImageCache, quick: bool) -> Subject:
    # The recipe, name and parameters of bench/pull.py's "large" image: one cache entry, one push.
    # 255, not 256 MiB: random.randbytes(256 MiB) overflows a C int in big_random_image.
    size = (16 if quick else 255) * MiB
    params = {"version": 1, "layers": [size] * 4, "compression": "none", "seed": 0}
    image = cache.get("pull-large", params, lambda: big_random_image([size] * 4, compression="none"))
    return Subject("large", image, f"large: 4 x {mib(size):.0f} MiB files, uncompressed")


# -- trials ----------------------------------------------------------------------


@dataclass(frozen=True)
class TreeSummary:
    """What a bundle's rootfs holds, to check every run made the same tree."""

    entries: int
    files: int
    file_bytes: int


def summarize(rootfs: Path) -> TreeSummary:
    entries = files = nbytes = 0
    for dirpath, dirnames, filenames in os.walk(rootfs):
        entries += len(dirnames) + len(filenames)
        for name in filenames:
            info = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(info.st_mode):
                files += 1
                nbytes += info.st_size
    return TreeSummary(entries, files, nbytes)


class BundleCheck:
    """Untimed check of every run: rootfs, config.json and the mtree are there, and the rootfs
    has the same number of entries, files and bytes as the first bundle made of this image."""

    def __init__(self, image: CachedImage):
        self.mtree = f"{image.digest.replace(':', '_')}.mtree"
        self.reference: TreeSummary | None = None

    def __call__(self, dest: Path, _result: subprocess.CompletedProcess[str]) -> None:
        bundle = dest / "bundle"
        for name in ("config.json", self.mtree):
            if not (bundle / name).is_file():
                raise RuntimeError(f"{bundle}: no {name} after the unpack: {sorted(os.listdir(bundle))}")
        summary = summarize(bundle / "rootfs")
        if self.reference is None:
            self.reference = summary
        elif summary != self.reference:
            raise RuntimeError(f"{bundle}/rootfs holds {summary}, the first bundle held {self.reference}")


def unpack_argv(tool: str, mode: str, store_root: Path, ref: str) -> Callable[[Path], list[str]]:
    rootless = ["--rootless"] if mode == "rootless" else []
    if tool == "ocitool":
        return lambda dest: [str(VENV_PYTHON), "-m", "ocitool", "--root", str(store_root), "unpack", *rootless,
                             ref, str(dest / "bundle")]
    return lambda dest: ["umoci", "unpack", *rootless, "--image", f"{store_root / 'images'}:{ref}",
                         str(dest / "bundle")]


def trial_name(tool: str, mode: str) -> str:
    return f"{tool} --rootless" if mode == "rootless" else tool


# -- main --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=None, help="timed runs per command (default 5, 2 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke check: 2 runs, a 64 MiB large image (debian stays, once built)")
    parser.add_argument("--only", choices=("debian", "large"), help="benchmark one image only")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--bundle-fs", choices=("ext4-loop", "work"),
                        default="ext4-loop" if os.geteuid() == 0 else "work",
                        help="where bundles go: a fresh loop-mounted ext4 (default as root) or "
                             "bench/.cache/work on the repository's file system")
    parser.add_argument("--check", action="store_true", help="exit with status 1 when a target is missed")
    args = parser.parse_args(argv)
    runs = args.runs or (2 if args.quick else 5)
    if runs < 1:
        parser.error("--runs must be at least 1")
    if shutil.which("umoci") is None:
        parser.error("umoci is not on PATH")

    cache = ImageCache()
    subjects = [make(cache) for name, make in (("debian", debian_subject),
                                                ("large", lambda c: large_subject(c, args.quick)))
                if args.only in (None, name)]
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="home-", dir=WORK_DIR))
    store_root = Path(tempfile.mkdtemp(prefix="unpack-store-", dir=WORK_DIR))
    env = clean_env(home)

    rows: list[list[str]] = []
    details: list[str] = []
    verdicts: list[bool] = []
    registry = start_registry(REGISTRY_STORAGE)
    bundle_fs = contextlib.ExitStack()
    try:
        log(f"registry on {registry.url}, storage {REGISTRY_STORAGE}")
        refs = {}
        for subject in subjects:
            ref = ensure_pushed(registry, f"bench/{subject.name}", f"k{subject.image.key}", subject.image)
            log(f"pulling {ref} into {store_root} (untimed) ...")
            pulled = run_checked([str(VENV_PYTHON), "-m", "ocitool", "--root", str(store_root), "pull", "-q", ref],
                                 env=env).stdout.strip()
            if pulled != subject.image.digest:
                raise RuntimeError(f"ocitool pull printed {pulled!r}, expected {subject.image.digest}")
            refs[subject.name] = ref
        registry.stop()  # unpacking needs no registry: stop it before timing
        if args.bundle_fs == "ext4-loop":
            bundle_dir = bundle_fs.enter_context(scratch_ext4(WORK_DIR)) / "bundles"
            log(f"bundles go to {bundle_dir} (fresh loop-mounted ext4)")
        else:
            bundle_dir = WORK_DIR / "bundles"

        for subject in subjects:
            ref = refs[subject.name]
            check = BundleCheck(subject.image)
            trials: dict[str, Trial] = {
                trial_name(tool, mode): command_trial(unpack_argv(tool, mode, store_root, ref), bundle_dir, env=env,
                                                      check=check)
                for mode in MODES for tool in TOOLS}
            cpu = {name: track_cpu(trial) for name, trial in trials.items()}
            log(f"{subject.label}: {runs} runs per command")
            times = alternate(trials, runs, warmup=args.warmup)
            med = {name: median(values) for name, values in times.items()}

            def cpu_median(name: str) -> str:
                timed = cpu[name][-runs:]  # the warm-up runs come first
                return f"{median(u for u, _ in timed):.2f} + {median(s for _, s in timed):.2f}"

            tree = check.reference
            assert tree is not None
            label = (f"{subject.label}; {tree.entries} entries, {tree.files} files, "
                     f"{mib(tree.file_bytes):.0f} MiB")
            target = TARGETS[subject.name]
            for mode in MODES:
                ours, theirs = trial_name("ocitool", mode), trial_name("umoci", mode)
                ratio = med[ours] / med[theirs]
                ok = ratio <= target
                verdicts.append(ok)
                rows.append([label, mode, "ocitool", f"{med[ours]:.3f}", spread(times[ours]), cpu_median(ours),
                             f"{ratio:.2f}x umoci", f"<= {target:.1f}x umoci", yes_no(ok)])
                rows.append([label, mode, "umoci", f"{med[theirs]:.3f}", spread(times[theirs]), cpu_median(theirs),
                             "1.00x (baseline)", "", ""])
            for name, trial in trials.items():
                details.append(f"- {subject.name} / {name}: `{trial.describe}`; runs (s): "
                               + ", ".join(f"{t:.3f}" for t in times[name])
                               + "; CPU user+sys (s): " + ", ".join(f"{u:.2f}+{s:.2f}" for u, s in cpu[name][-runs:]))
    finally:
        bundle_fs.close()
        registry.stop()
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(store_root, ignore_errors=True)

    versions = {"ocitool": tool_version([str(VENV_PYTHON), "-m", "ocitool", "--version"]).split()[-1],
                "umoci": tool_version(["umoci", "--version"]).split()[-1],
                "Python": sys.version.split()[0]}
    versions["ocitool"] += f" (git {git_revision(paths=['ocitool'])})"
    print_header("unpack", argv, versions)
    where = ("a fresh 4 GiB ext4 (mkfs.ext4 defaults, journaled) loop-mounted for the run"
             if args.bundle_fs == "ext4-loop" else "bench/.cache/work on the repository's file system")
    print(f"- method: images pulled once (untimed) into one ocitool store, whose images/ layout umoci reads too; "
          f"{runs} timed runs per command after {args.warmup} warm-up round, the 4 commands alternating (first "
          "one rotating each round), each into DEST/bundle with DEST a fresh empty directory, removed and "
          f"`sync`ed between runs; bundles on {where}; wall-clock time of the whole command (process start-up "
          "and the mtree included); CPU = median user + system seconds of the command; --rootless run as root\n")
    print(markdown_table(["image", "mode", "tool", "median s", "min-max s", "CPU s (user + sys)", "ratio",
                          "target", "met"], rows))
    print("\nCommands and raw times (DEST = fresh empty directory, STORE = the ocitool root):\n")
    print("\n".join(details).replace(str(store_root), "STORE"))
    print(f"\nAll targets met: {yes_no(all(verdicts))}")
    return 1 if args.check and not all(verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
