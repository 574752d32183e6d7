#!/usr/bin/env python3
"""Benchmark ``ocitool-runtime run`` against ``runc run`` and ``crun run``: start-to-exit of ``true``.

One bundle (Debian's busybox-static rootfs with ocitool's default spec, built by the test
suite's ``make_bundle``, process ``true``) is run by each runtime in turn, the tools
alternating (the first tool rotating each round) after untimed warm-up rounds. The time is
the wall-clock time of the whole foreground ``run`` command, from exec to exit: process
start-up, create (cgroup, namespaces, mounts, pivot_root), start, the container's exit, and
the delete that ``run`` does on the way out. Every run uses a new container id, each tool
has its own ``--root`` state directory, and after every run the script checks (untimed)
that the state directory and the cgroup are gone again.

crun 1.8 refuses a hybrid cgroup layout (v1 controllers plus a ``cgroup2`` mount at
``/sys/fs/cgroup/unified``), so on such a host it runs as
``unshare -m sh -c 'umount /sys/fs/cgroup/unified; exec crun ...'``. That wrapper's cost is
timed on its own (``... exec true``) and crun's median is reported both raw and with the
wrapper's median subtracted.

Two anchors, for information, split ocitool's time: the venv's Python starting with
``-c pass``, and ``ocitool-runtime --version`` (start-up plus every import of the CLI, which
loads the whole runtime package, but no container).

Target: ocitool median <= 1.5x runc's.

    .venv/bin/python bench/runtime.py [--runs N] [--quick] [--warmup N] [--no-anchors] [--ocitool-rev REV] [--check]
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (CACHE_DIR, REPO_ROOT, VENV_PYTHON, Trial, alternate, clean_env, git_revision,  # noqa: E402
                    log, print_header, markdown_table, median, run_checked, tool_version, yes_no)
from support.bundles import make_bundle  # noqa: E402

WORK_DIR = CACHE_DIR / "work"
OCITOOL_RUNTIME = REPO_ROOT / ".venv" / "bin" / "ocitool-runtime"
CGROUP_ROOT = Path("/sys/fs/cgroup")
UNIFIED = CGROUP_ROOT / "unified"
RUNC_TARGET = 1.5           # ocitool median / runc median must be <= this
DEFAULT_RUNS = 20
QUICK_RUNS = 5

OCITOOL, RUNC, CRUN = "ocitool-runtime", "runc", "crun"
WRAPPER = "unshare+umount (crun wrapper)"
PYTHON_ANCHOR = "python -c pass (venv)"
VERSION_ANCHOR = "ocitool-runtime --version"


def hybrid_cgroups() -> bool:
    """True when cgroup v1 hierarchies are mounted and a cgroup2 at /sys/fs/cgroup/unified too."""
    try:
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split(" - ")[0].split()[4:5] + line.split(" - ")[1].split()[:1] for line in f]
    except OSError:
        return False
    return ([str(UNIFIED), "cgroup2"] in mounts
            and any(fstype == "cgroup" and point.startswith(f"{CGROUP_ROOT}/") for point, fstype in mounts))


def unshare_wrapped(command: Sequence[str]) -> list[str]:
    """``command`` in a private mount namespace without the cgroup2 ``unified`` mount."""
    return ["unshare", "-m", "sh", "-c", f"umount {shlex.quote(str(UNIFIED))}; exec {shlex.join(command)}"]


def leftover_cgroups(container_id: str) -> list[str]:
    """cgroup directories named ``container_id`` in any hierarchy (depth <= 4), i.e. leaks."""
    found = []
    for hierarchy in CGROUP_ROOT.iterdir():
        if not hierarchy.is_dir():
            continue
        for top, dirs, _files in os.walk(hierarchy):
            if len(Path(top).relative_to(hierarchy).parts) >= 4:
                dirs[:] = []
            if container_id in dirs:
                found.append(str(Path(top) / container_id))
    return found


def runtime_trial(name: str, argv: Callable[[str], list[str]], state_root: Path, env: dict[str, str],
                  id_prefix: str) -> Trial:
    """``argv(container_id)`` with a fresh id per run; checks exit status 0, then no state or cgroup left."""
    counter = itertools.count(1)

    def setup() -> str:
        return f"{id_prefix}-{next(counter)}"

    def check(container_id: str, _result: subprocess.CompletedProcess[str]) -> None:
        left = [str(p) for p in state_root.iterdir()] if state_root.is_dir() else []
        left += leftover_cgroups(container_id)
        if left:
            raise RuntimeError(f"{name} left state or cgroups behind: {left}")

    return Trial(run=lambda container_id: run_checked(argv(container_id), env=env, timeout=60), setup=setup,
                 check=check, describe=shlex.join(argv("ID")))


def command(argv: list[str], env: dict[str, str]) -> Trial:
    return Trial(run=lambda _state: run_checked(argv, env=env, timeout=60), describe=shlex.join(argv))


def export_ocitool(rev: str, dest: Path) -> Path:
    """``ocitool/`` as of git ``rev``, byte-compiled, under ``dest``; returns ``dest`` (for PYTHONPATH)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", rev, "ocitool"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    run_checked([str(VENV_PYTHON), "-m", "compileall", "-q", str(dest)])
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=None,
                        help=f"timed runs per tool (default {DEFAULT_RUNS}, {QUICK_RUNS} with --quick)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RUNS} runs and 1 warm-up round: a smoke check")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 2, 1 with --quick)")
    parser.add_argument("--no-anchors", action="store_true", help="skip the python / --version anchors")
    parser.add_argument("--ocitool-rev", metavar="REV",
                        help="time ocitool's code as committed at REV (git archive + PYTHONPATH) instead of the "
                             "working tree, e.g. while the tree holds unfinished edits")
    parser.add_argument("--check", action="store_true", help="exit with status 1 when the target is missed")
    args = parser.parse_args(argv)
    runs = args.runs or (QUICK_RUNS if args.quick else DEFAULT_RUNS)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    if runs < 1 or warmup < 0:
        parser.error("--runs must be at least 1 and --warmup at least 0")
    if os.geteuid() != 0:
        parser.error("run as root: runc and crun need it to create cgroups and namespaces")
    for tool in ("runc", "crun", "unshare"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed")

    WORK_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="runtime-", dir=WORK_DIR))
    env = clean_env(work / "home")
    ocitool_env = env
    if args.ocitool_rev:
        ocitool_env = clean_env(work / "home", {"PYTHONPATH": str(export_ocitool(args.ocitool_rev, work / "src"))})
    bundle = make_bundle(work / "bundle", ["true"])
    roots = {name: work / f"state-{name.split('-')[0]}" for name in (OCITOOL, RUNC, CRUN)}
    for root in roots.values():
        root.mkdir()
    hybrid = hybrid_cgroups()
    prefix = f"bench-{os.getpid()}"

    def crun_argv(container_id: str) -> list[str]:
        argv_ = ["crun", "--root", str(roots[CRUN]), "run", "--bundle", str(bundle), container_id]
        return unshare_wrapped(argv_) if hybrid else argv_

    trials: dict[str, Trial] = {
        OCITOOL: runtime_trial(OCITOOL, lambda cid: [str(OCITOOL_RUNTIME), "--root", str(roots[OCITOOL]), "run",
                                                     "--bundle", str(bundle), cid], roots[OCITOOL], ocitool_env,
                               f"{prefix}-ocitool"),
        RUNC: runtime_trial(RUNC, lambda cid: ["runc", "--root", str(roots[RUNC]), "run", "--bundle", str(bundle),
                                               cid], roots[RUNC], env, f"{prefix}-runc"),
        CRUN: runtime_trial(CRUN, crun_argv, roots[CRUN], env, f"{prefix}-crun"),
    }
    if hybrid:
        trials[WRAPPER] = command(unshare_wrapped(["true"]), env)
    if not args.no_anchors:
        trials[PYTHON_ANCHOR] = command([str(VENV_PYTHON), "-c", "pass"], ocitool_env)
        trials[VERSION_ANCHOR] = command([str(OCITOOL_RUNTIME), "--version"], ocitool_env)

    try:
        log(f"bundle {bundle}; {runs} runs per tool after {warmup} warm-up round(s); hybrid cgroups: {hybrid}")
        times = alternate(trials, runs, warmup=warmup)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {name: median(values) for name, values in times.items()}
    ratio = med[OCITOOL] / med[RUNC]
    ok = ratio <= RUNC_TARGET
    wrapper = med.get(WRAPPER, 0.0)
    crun_net = med[CRUN] - wrapper

    def row(name: str, figure: str, target: str = "", met: str = "") -> list[str]:
        return [name, f"{med[name] * 1000:.1f}", spread_ms(times[name]), figure, target, met]

    rows = [row(OCITOOL, f"{ratio:.2f}x runc", f"<= {RUNC_TARGET:.1f}x runc", yes_no(ok)),
            row(RUNC, "1.00x (baseline)")]
    if hybrid:
        rows.append([f"{CRUN} (raw, incl. unshare wrapper)", f"{med[CRUN] * 1000:.1f}", spread_ms(times[CRUN]),
                     f"{med[CRUN] / med[RUNC]:.2f}x runc", "", ""])
        rows.append([f"{CRUN} (wrapper median subtracted)", f"{crun_net * 1000:.1f}", "",
                     f"{crun_net / med[RUNC]:.2f}x runc", "", ""])
        rows.append(row(WRAPPER, "overhead in crun raw (info)"))
    else:
        rows.append(row(CRUN, f"{med[CRUN] / med[RUNC]:.2f}x runc"))
    if not args.no_anchors:
        rows.append(row(PYTHON_ANCHOR, f"{med[PYTHON_ANCHOR] / med[OCITOOL]:.0%} of ocitool-runtime run (info)"))
        rows.append(row(VERSION_ANCHOR, f"{med[VERSION_ANCHOR] / med[OCITOOL]:.0%} of ocitool-runtime run; "
                                        f"run - this = {(med[OCITOOL] - med[VERSION_ANCHOR]) * 1000:.0f} ms (info)"))

    revision = git_revision(paths=["ocitool"])
    if args.ocitool_rev:
        sha = run_checked(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", args.ocitool_rev]).stdout.strip()
        revision = f"{sha}{'' if sha.startswith(args.ocitool_rev) else f' = {args.ocitool_rev}'} via PYTHONPATH"
    versions = {"ocitool": tool_version([str(OCITOOL_RUNTIME), "--version"]).split()[-1] + f" (git {revision})",
                "runc": tool_version(["runc", "--version"]).split()[-1],
                "crun": tool_version(["crun", "--version"]).split()[-1],
                "Python": sys.version.split()[0]}
    print_header("runtime", argv, versions, machine_note="; cgroups: " + (
        f"hybrid (v1 controllers + cgroup2 at {UNIFIED})" if hybrid else "not hybrid"))
    print(f"- method: one busybox bundle (ocitool's default spec, process `true`); {runs} timed runs per tool "
          f"after {warmup} untimed warm-up round(s), tools alternating (first tool rotating each round); "
          "wall-clock time of the whole foreground `run` (process start-up to exit, create + start + wait + "
          "delete); a new container id every run, each tool its own --root state directory; state and cgroup "
          "checked gone "
          "after each run (untimed)\n")
    print(markdown_table(["tool", "median ms", "min-max ms", "ratio", "target", "met"], rows))
    print("\nCommands and raw times (ID = a new container id per run):\n")
    for name, trial in trials.items():
        print(f"- {name}: `{trial.describe}`; runs (ms): " + ", ".join(f"{t * 1000:.1f}" for t in times[name]))
    print(f"\nTarget met: {yes_no(ok)}")
    return 1 if args.check and not ok else 0


def spread_ms(values: Sequence[float]) -> str:
    return f"{min(values) * 1000:.0f}-{max(values) * 1000:.0f}"


if __name__ == "__main__":
    sys.exit(main())
