#!/usr/bin/env python3
"""Benchmark ``ocitool run --rm busybox true``, warm and cold, against runc, podman and a chained anchor.

One local ``docker-registry`` (started here, loopback, plain HTTP, temporary storage) holds
the test suite's ``busybox_image()`` as ``library/busybox:latest``. ocitool is pointed at it
as the mirror of docker.io by a config file (``[registries."docker.io"] mirrors = [...]``),
so it runs the short name ``busybox``; podman and skopeo use ``127.0.0.1:PORT/library/busybox:latest``.

**warm**: the image is already pulled and unpacked. ocitool runs with one ``--root`` that
was filled by an untimed first run (pull + unpack into its rootfs cache), so each timed run
is: start-up, look up the image, mount a private overlay on the cached rootfs, run the
container through its runtime, clean up (``--rm``). Compared with:

* ``runc run`` of a ready bundle (``tests/support/bundles.make_bundle`` with ``["true"]``:
  Debian's busybox-static rootfs and ocitool's default spec), a new container id each run;
* ``podman run --rm`` of the same image from the same registry, pulled once beforehand
  (vfs storage, cgroupfs, host network; ``--runtime runc`` because podman's default crun 1.8
  refuses this host's hybrid cgroup layout).

**cold**: every run starts from an empty state directory (created and removed, then
``sync``, outside the timed region): ocitool pulls, unpacks and runs. Compared with:

* the chained anchors, one ``sh -c`` of ``skopeo copy docker://REF oci:DIR:latest &&
  umoci unpack --image DIR:latest BUNDLE && sed -i ... BUNDLE/config.json && runc run``.
  umoci's config.json runs the image's Cmd (``sh``) on a terminal, so the chain edits it with
  two ``sed`` expressions (``"terminal": true`` -> ``false``, and ``"sh"`` -> ``"true"`` inside
  the ``"args": [...]`` lines); the edit is timed as part of the chain, and checked untimed;
* ``podman run --rm`` with empty ``--root``/``--runroot``/``--tmpdir`` each time (it pulls).

The tools alternate (the first tool rotating each round) after untimed warm-up rounds; the
time is the wall-clock time of the whole command, process start-up included. After every run
an untimed check makes sure nothing was left behind, then ``sync`` flushes dirty pages (an
overlay unmount syncs the whole upper file system, so ocitool's time would otherwise depend
on what other processes left dirty).

Targets: warm ocitool <= 2x ``runc run``; cold ocitool <= 1.0x the chained anchors; ocitool
faster than podman in both cases. For information the warm table also times the venv's
``python -c pass``, ``ocitool --version`` (start-up and CLI imports, no container), and
``runc run`` of the same bundle plus the Docker-like seccomp profile that ``ocitool run``
installs as root (the plain bundle has none).

    .venv/bin/python bench/run.py [--runs N] [--quick] [--warmup N] [--only warm|cold] [--no-anchors] [--check]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (REPO_ROOT, VENV_PYTHON, CachedImage, ImageCache, Trial, alternate,  # noqa: E402
                    clean_env, command_trial, ensure_pushed, git_revision, log, print_header, markdown_table,
                    median, run_checked, start_registry, tool_version, yes_no)
from support.bundles import make_bundle  # noqa: E402
from support.images import BUSYBOX_PATH, busybox_image  # noqa: E402

from ocitool.runtime.capabilities import CAPABILITIES  # noqa: E402
from ocitool.runtime.seccomp import default_profile  # noqa: E402

OCITOOL = REPO_ROOT / ".venv" / "bin" / "ocitool"
REPOSITORY, TAG = "library/busybox", "latest"
DEFAULT_RUNS, QUICK_RUNS = 20, 5
RUNC_TARGET = 2.0           # warm: ocitool median / runc median must be <= this
CHAIN_TARGET = 1.0          # cold: ocitool median / chained-anchors median must be <= this
RUNROOT_MAX = 50            # podman's --runroot must stay short (conmon's socket paths)
TIMEOUT = 120

OCI_WARM, RUNC, PODMAN_WARM = "ocitool run (warm)", "runc run (bundle ready)", "podman run (warm)"
RUNC_SECCOMP = "runc run (+ seccomp profile)"
OCI_COLD, CHAIN, PODMAN_COLD = "ocitool run (cold)", "skopeo+umoci+sed+runc", "podman run (cold)"
PYTHON_ANCHOR, VERSION_ANCHOR = "python -c pass (venv)", "ocitool --version"

# umoci writes config.json with one key per line; these turn its terminal off and its
# args ["sh"] (the image's Cmd) into ["true"] without a JSON tool.
SED_EDIT = ["-e", 's/"terminal": true/"terminal": false/', "-e", r'/"args": \[/,/\]/s/"sh"/"true"/']


# -- setup -----------------------------------------------------------------------


def cached_busybox() -> CachedImage:
    """``busybox_image()`` in the bench image cache, keyed by the host busybox binary it embeds."""
    binary = hashlib.sha256(Path(BUSYBOX_PATH).read_bytes()).hexdigest()[:16]
    return ImageCache().get("run-busybox", {"version": 1, "busybox": binary}, busybox_image)


def podman_argv(state: Path) -> list[str]:
    """podman's global flags with all of its state (storage, runroot, tmpdir) under ``state``."""
    runroot = state / "rr"
    if len(str(runroot)) >= RUNROOT_MAX:
        raise RuntimeError(f"podman --runroot {runroot} is too long (must be < {RUNROOT_MAX} characters)")
    return ["podman", "--root", str(state / "st"), "--runroot", str(runroot), "--tmpdir", str(state / "tmp"),
            "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
            "--runtime", "runc"]


def podman_run(state: Path, ref: str) -> list[str]:
    return [*podman_argv(state), "run", "--rm", "-q", "--network", "host", "--ulimit", "nofile=1024:1024",
            "--ulimit", "nproc=1024:1024", "--tls-verify=false", ref, "true"]


def ocitool_run(root: Path, config: Path) -> list[str]:
    return [str(OCITOOL), "--root", str(root), "--config", str(config), "run", "--rm", "busybox", "true"]


def chain_script(dest: Path, ref: str, container_id: str) -> str:
    layout, bundle = dest / "layout", dest / "bundle"
    return " && ".join(shlex.join(argv) for argv in (
        ["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:{TAG}"],
        ["umoci", "unpack", "--image", f"{layout}:{TAG}", str(bundle)],
        ["sed", "-i", *SED_EDIT, str(bundle / "config.json")],
        ["runc", "--root", str(dest / "state"), "run", "--bundle", str(bundle), container_id],
    ))


# -- checks (untimed) --------------------------------------------------------------


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def check_ocitool_clean(root: Path) -> None:
    """After ``run --rm``: no run directory and no runtime state (the seccomp cache aside) left under ``root``."""
    left = [f"containers/{n}" for n in entries(root / "containers")]
    left += [f"runtime/{n}" for n in entries(root / "runtime")
             if (root / "runtime" / n).is_dir() and n != ".seccomp-cache"]
    if left:
        raise RuntimeError(f"ocitool run --rm left {left} under {root}")
    if not entries(root / "rootfs"):
        raise RuntimeError(f"ocitool has no unpacked rootfs under {root / 'rootfs'}")


def check_podman_clean(state: Path) -> None:
    """After ``run --rm``: podman's vfs container list is empty."""
    listing = state / "st" / "vfs-containers" / "containers.json"
    containers = json.loads(listing.read_text()) if listing.is_file() else []
    if containers:
        raise RuntimeError(f"podman run --rm left containers: {[c.get('id') for c in containers]}")


def check_chain(dest: Path) -> None:
    process = json.loads((dest / "bundle" / "config.json").read_text())["process"]
    if process["args"] != ["true"] or process["terminal"] is not False:
        raise RuntimeError(f"the sed edit of umoci's config.json gave args={process['args']}, "
                           f"terminal={process['terminal']}")
    if entries(dest / "state"):
        raise RuntimeError(f"runc left state behind: {entries(dest / 'state')}")


# -- trials ----------------------------------------------------------------------


def synced(_state: object) -> None:
    """Untimed cleanup of the warm trials: flush dirty pages, as ``command_trial`` does for the cold ones.

    Unmounting an overlay with an upper layer syncs the upper file system, so ocitool's time
    would otherwise depend on how much other processes (or the previous run) left dirty.
    """
    os.sync()


def command(argv: Sequence[str], env: dict[str, str], check: Callable[[], None] = lambda: None) -> Trial:
    """A fixed command, timed whole, with an untimed ``check()`` and ``sync`` after each run."""
    return Trial(run=lambda _state: run_checked(argv, env=env, timeout=TIMEOUT),
                 check=lambda _state, _result: check(), cleanup=synced, describe=shlex.join(argv))


def runc_trial(bundle: Path, state: Path, env: dict[str, str], prefix: str) -> Trial:
    """``runc run`` of ``bundle`` with a new container id each run; checks the state is gone."""
    counter = itertools.count(1)

    def argv(container_id: str) -> list[str]:
        return ["runc", "--root", str(state), "run", "--bundle", str(bundle), container_id]

    def check(_container_id: str, _result: subprocess.CompletedProcess[str]) -> None:
        if entries(state):
            raise RuntimeError(f"runc left state behind: {entries(state)}")

    return Trial(run=lambda container_id: run_checked(argv(container_id), env=env, timeout=TIMEOUT),
                 setup=lambda: f"{prefix}-{next(counter)}", check=check, cleanup=synced,
                 describe=shlex.join(argv("ID")))


def warm_trials(work: Path, ref: str, config: Path, env: dict[str, str], anchors: bool) -> dict[str, Trial]:
    """Fill ocitool's and podman's warm state (untimed) and return the warm trials."""
    root, podman_state, runc_state = work / "warm-ocitool", work / "pw", work / "warm-runc"
    runc_state.mkdir()
    log("warm: first ocitool run (pull + unpack, untimed) ...")
    run_checked(ocitool_run(root, config), env=env, timeout=TIMEOUT)
    log("warm: podman pull (untimed) ...")
    run_checked([*podman_argv(podman_state), "pull", "-q", "--tls-verify=false", ref], env=env, timeout=TIMEOUT)
    bundle = make_bundle(work / "bundle", ["true"])
    trials = {
        OCI_WARM: command(ocitool_run(root, config), env, lambda: check_ocitool_clean(root)),
        RUNC: runc_trial(bundle, runc_state, env, f"runbench-{os.getpid()}"),
        PODMAN_WARM: command(podman_run(podman_state, ref), env, lambda: check_podman_clean(podman_state)),
    }
    if anchors:
        # ocitool run (as root) installs Docker's default seccomp profile, the runc bundle has none:
        # the same bundle with ocitool's profile for its capabilities shows what that costs runc.
        spec = json.loads((bundle / "config.json").read_text())
        bounding = {CAPABILITIES[name] for name in spec["process"]["capabilities"]["bounding"]}
        seccomp_bundle = make_bundle(work / "bundle-seccomp", ["true"], linux__seccomp=default_profile(bounding))
        trials[RUNC_SECCOMP] = runc_trial(seccomp_bundle, runc_state, env, f"runbench-{os.getpid()}-sc")
        trials[PYTHON_ANCHOR] = command([str(VENV_PYTHON), "-c", "pass"], env)
        trials[VERSION_ANCHOR] = command([str(OCITOOL), "--version"], env)
    return trials


def cold_trials(work: Path, ref: str, config: Path, env: dict[str, str]) -> dict[str, Trial]:
    """Trials that each start from a fresh empty directory (removed and synced afterwards)."""
    cold = work / "c"
    counter = itertools.count(1)
    prefix = f"runbench-{os.getpid()}-cold"

    def chain_argv(dest: Path) -> list[str]:
        return ["sh", "-c", chain_script(dest, ref, f"{prefix}-{next(counter)}")]

    return {
        OCI_COLD: command_trial(lambda dest: ocitool_run(dest, config), cold, env=env,
                                check=lambda dest, _result: check_ocitool_clean(dest)),
        CHAIN: command_trial(chain_argv, cold, env=env, check=lambda dest, _result: check_chain(dest)),
        PODMAN_COLD: command_trial(lambda dest: podman_run(dest, ref), cold, env=env,
                                   check=lambda dest, _result: check_podman_clean(dest)),
    }


# -- main --------------------------------------------------------------------------


def ocitool_tree() -> tuple[str, str]:
    """``(description, fingerprint)`` of the ocitool sources being timed: commit, files with
    local changes, and a hash of those changes, so a result names exactly what was timed and
    a tree edited during the run is noticed."""
    status = run_checked(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "ocitool"]).stdout
    dirty = [line[3:] for line in status.splitlines() if line.strip()]
    diff = run_checked(["git", "-C", str(REPO_ROOT), "diff", "HEAD", "--", "ocitool"]).stdout
    description = f"git {git_revision(paths=['ocitool'])}" + (f"; uncommitted: {', '.join(dirty)}" if dirty else "")
    return description, hashlib.sha256((description + diff).encode()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=None,
                        help=f"timed runs per tool (default {DEFAULT_RUNS}, {QUICK_RUNS} with --quick)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RUNS} runs per tool: a smoke check")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--only", choices=("warm", "cold"), help="benchmark one case only")
    parser.add_argument("--no-anchors", action="store_true", help="skip the python / --version anchors")
    parser.add_argument("--check", action="store_true", help="exit with status 1 when a target is missed")
    args = parser.parse_args(argv)
    runs = args.runs or (QUICK_RUNS if args.quick else DEFAULT_RUNS)
    if runs < 1 or args.warmup < 0:
        parser.error("--runs must be at least 1 and --warmup at least 0")
    if os.geteuid() != 0:
        parser.error("run as root: runc, podman and ocitool's rootful run need it")
    for tool in ("runc", "podman", "skopeo", "umoci", "sed"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed")

    tree = ocitool_tree()
    image = cached_busybox()
    # A short private directory on /tmp (the same ext4 as the repository here): podman's
    # --runroot must stay under 50 characters, and nothing is shared with other bench runs.
    work = Path(tempfile.mkdtemp(prefix="runbench-"))
    env = clean_env(work / "home")
    times: dict[str, list[float]] = {}
    trials: dict[str, Trial] = {}
    registry = start_registry()
    try:
        ref = ensure_pushed(registry, REPOSITORY, TAG, image)
        config = work / "config.toml"
        config.write_text(f'[registries."docker.io"]\nmirrors = ["{registry.host}"]\n')
        log(f"registry on {registry.url}, image {ref} ({image.digest}); work dir {work}")
        if args.only in (None, "warm"):
            warm = warm_trials(work, ref, config, env, anchors=not args.no_anchors)
            log(f"warm: {runs} runs per tool")
            times |= alternate(warm, runs, warmup=args.warmup)
            trials |= warm
        if args.only in (None, "cold"):
            cold = cold_trials(work, ref, config, env)
            log(f"cold: {runs} runs per tool")
            times |= alternate(cold, runs, warmup=args.warmup)
            trials |= cold
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)

    med = {name: median(values) for name, values in times.items()}
    rows: list[list[str]] = []
    verdicts: list[bool] = []

    def row(case: str, name: str, figure: str, target: str = "", ok: bool | None = None) -> None:
        rows.append([case, name, f"{med[name] * 1000:.0f}",
                     f"{min(times[name]) * 1000:.0f}-{max(times[name]) * 1000:.0f}", figure, target,
                     "" if ok is None else yes_no(ok)])
        if ok is not None:
            verdicts.append(ok)

    if OCI_WARM in med:
        ratio, vs_podman = med[OCI_WARM] / med[RUNC], med[OCI_WARM] / med[PODMAN_WARM]
        row("warm", OCI_WARM, f"{ratio:.2f}x runc", f"<= {RUNC_TARGET:.1f}x runc", ratio <= RUNC_TARGET)
        row("warm", RUNC, "1.00x (baseline)")
        row("warm", PODMAN_WARM, f"ocitool = {vs_podman:.2f}x podman", "ocitool < podman", vs_podman < 1)
        if PYTHON_ANCHOR in med:
            row("warm", RUNC_SECCOMP, f"{med[RUNC_SECCOMP] / med[RUNC]:.2f}x runc; ocitool = "
                                      f"{med[OCI_WARM] / med[RUNC_SECCOMP]:.2f}x this (info)")
            row("warm", PYTHON_ANCHOR, f"{med[PYTHON_ANCHOR] / med[OCI_WARM]:.0%} of ocitool run (info)")
            row("warm", VERSION_ANCHOR, f"{med[VERSION_ANCHOR] / med[OCI_WARM]:.0%} of ocitool run; run - this = "
                                        f"{(med[OCI_WARM] - med[VERSION_ANCHOR]) * 1000:.0f} ms (info)")
    if OCI_COLD in med:
        ratio, vs_podman = med[OCI_COLD] / med[CHAIN], med[OCI_COLD] / med[PODMAN_COLD]
        row("cold", OCI_COLD, f"{ratio:.2f}x chain", f"<= {CHAIN_TARGET:.1f}x chain", ratio <= CHAIN_TARGET)
        row("cold", CHAIN, "1.00x (baseline)")
        row("cold", PODMAN_COLD, f"ocitool = {vs_podman:.2f}x podman", "ocitool < podman", vs_podman < 1)

    tree_after = ocitool_tree()
    versions = {"ocitool": tool_version([str(OCITOOL), "--version"]).split()[-1] + f" ({tree[0]})",
                "runc": tool_version(["runc", "--version"]).split()[-1],
                "podman": tool_version(["podman", "--version"]).split()[-1],
                "skopeo": tool_version(["skopeo", "--version"]).split()[-1],
                "umoci": tool_version(["umoci", "--version"]).split()[-1],
                "docker-registry": tool_version(["/usr/bin/docker-registry", "--version"]).split()[-1],
                "Python": sys.version.split()[0]}
    print_header("run", argv, versions)
    print(f"- method: image `busybox_image()` (1 layer, {image.layer_bytes / 1024:.0f} KiB gzip) in a loopback "
          f"docker-registry; {runs} timed runs per tool after {args.warmup} untimed warm-up round(s), tools "
          "alternating (first tool rotating each round); wall-clock time of the whole command; warm = state "
          "already pulled/unpacked (untimed first run), cold = fresh empty state directory per run, removed "
          "untimed; after every run an untimed check that nothing was left behind, then `sync`\n")
    print(markdown_table(["case", "tool", "median ms", "min-max ms", "ratio", "target", "met"], rows))
    print("\nCommands and raw times (ID = a new container id, DEST = the fresh directory of a cold run):\n")
    for name, trial in trials.items():
        print(f"- {name}: `{trial.describe}`; runs (ms): " + ", ".join(f"{t * 1000:.0f}" for t in times[name]))
    if tree_after[1] != tree[1]:
        print(f"\n**Warning**: ocitool's sources changed during the run (now {tree_after[0]}); re-run.")
    print(f"\nAll targets met: {yes_no(all(verdicts))}")
    return 1 if args.check and not all(verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
