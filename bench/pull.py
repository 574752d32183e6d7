#!/usr/bin/env python3
"""Benchmark ``ocitool pull`` against ``skopeo copy`` (and a raw ``curl | sha256sum`` anchor).

One local ``docker-registry`` (started here, on a free loopback port, plain HTTP) serves
two images:

* ``multi``: 8 gzip layers of mixed sizes, ~100 MiB of content, each layer many files of
  log-uniformly distributed sizes, half incompressible random bytes and half word-salad
  text (gzip ~3x), like a typical application image;
* ``large``: 4 uncompressed layers of one 255 MiB random file each (~1 GiB; 256 MiB
  overflows ``random.randbytes`` in the test image builder).

Every tool pulls each image into a fresh empty directory, the tools alternating (the first
tool rotating each round) after one untimed warm-up round; the medians are compared.
For ``large`` the anchor is ``curl -sf URL | sha256sum`` over the same layer blobs, 4 in
parallel (``xargs -P 4``, the same concurrency as ocitool's 4 download jobs) and, for
information, one after the other.

Targets: ocitool <= 1.0x skopeo on ``multi``; ocitool >= 80% of the parallel
``curl | sha256sum`` throughput on ``large``.

Generated images are cached in ``bench/.cache/images/`` (keyed by their parameters) and
the registry keeps its storage in ``bench/.cache/registry/``, so only the first run pays
for building and pushing.

    .venv/bin/python bench/pull.py [--runs N] [--quick] [--only multi|large] [--warmup N] [--check]
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (CACHE_DIR, MiB, VENV_PYTHON, CachedImage, ImageCache, Trial, alternate,  # noqa: E402
                    clean_env, command_trial, ensure_pushed, git_revision, log, print_header, markdown_table, median,
                    mib, run_checked, spread, start_registry, throughput, tool_version, yes_no)
from support.images import Dir, File, Image, big_random_image, make_image, tar_layer  # noqa: E402

REGISTRY_STORAGE = CACHE_DIR / "registry"
WORK_DIR = CACHE_DIR / "work"
RECIPE_VERSION = 1          # bump when a builder below changes what it produces
PULL_JOBS = 4               # ocitool's default download concurrency (ocitool.image.pull.DEFAULT_JOBS)
SKOPEO_TARGET = 1.0         # ocitool median / skopeo median must be <= this on "multi"
SKOPEO_GZIP = "skopeo, default oci: (re-gzips)"
CURL_TARGET = 0.80          # ocitool throughput / curl throughput must be >= this on "large"

# Share of each multi-layer image's content per layer (largest first, like base + app layers).
MULTI_SHARES = (0.36, 0.22, 0.14, 0.10, 0.08, 0.05, 0.03, 0.02)


# -- images ----------------------------------------------------------------------


def _text_corpus(rng: random.Random, size: int) -> bytes:
    """Word salad from a 5000-word pseudo-vocabulary, newline every ~12 words (gzip ~3x)."""
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [26 - i for i in range(26)]
    vocab = ["".join(rng.choices(letters, weights, k=rng.randint(2, 10))) for _ in range(5000)]
    words = rng.choices(vocab, k=size // 6 + 1)
    for i in range(12, len(words), 12):
        words[i] = words[i] + "\n"
    return " ".join(words).encode()[:size]


def multi_layer_image(total: int, random_fraction: float = 0.5, seed: int = 0) -> Image:
    """An 8-layer gzip image of ``total`` bytes of content (files of 512 B .. 4 MiB)."""
    rng = random.Random(seed)
    corpus = _text_corpus(rng, 8 * MiB)
    tars = []
    for index, share in enumerate(MULTI_SHARES):
        target = max(1, int(total * share))
        entries: list[Any] = [Dir("opt"), Dir(f"opt/layer{index}")]
        written = count = 0
        while written < target:
            size = min(int(2 ** rng.uniform(9, 22)), target - written)  # 512 B .. 4 MiB
            if rng.random() < random_fraction:
                content, kind = rng.randbytes(size), "bin"
            else:
                start = rng.randrange(len(corpus) - size) if size < len(corpus) else 0
                content, kind = corpus[start:start + size], "txt"
            entries.append(File(f"opt/layer{index}/f{count:05d}.{kind}", content))
            written += size
            count += 1
        tars.append(tar_layer(entries))
    return make_image(tars, compression="gzip", config_extra={"Cmd": ["/bin/sh"]})


@dataclass(frozen=True)
class Spec:
    """One benchmark image: how to build it and how to describe it."""

    name: str                   # "multi" or "large": --only value and repository suffix
    params: dict[str, Any]      # the cache key parameters
    build: Callable[[], Image]
    label: Callable[[CachedImage], str]


def specs(quick: bool) -> list[Spec]:
    multi_total = (10 if quick else 100) * MiB
    # 255, not 256: big_random_image uses random.randbytes, whose getrandbits(8 * n) overflows a C
    # int at n = 256 MiB ("OverflowError: Python int too large to convert to C int").
    large_layer = (16 if quick else 255) * MiB
    multi_params = {"version": RECIPE_VERSION, "total": multi_total, "shares": MULTI_SHARES,
                    "random_fraction": 0.5, "compression": "gzip", "seed": 0}
    large_params = {"version": RECIPE_VERSION, "layers": [large_layer] * 4, "compression": "none", "seed": 0}
    return [
        Spec("multi", multi_params, lambda: multi_layer_image(multi_total),
             lambda img: f"multi: 8 layers, {mib(multi_total):.0f} MiB, {mib(img.layer_bytes):.1f} MiB gzip"),
        Spec("large", large_params, lambda: big_random_image([large_layer] * 4, compression="none"),
             lambda img: f"large: 4 x {mib(large_layer):.0f} MiB, uncompressed"),
    ]


# -- trials ----------------------------------------------------------------------


def _need_files(root: Path, image: CachedImage) -> None:
    """Raise unless every config and layer blob of ``image`` is under ``root/blobs``."""
    missing = [b.digest for b in (image.config, *image.layers)
               if not (root / "blobs" / "sha256" / b.digest.partition(":")[2]).is_file()]
    if missing:
        raise RuntimeError(f"{root}: missing blobs after the pull: {missing}")


def ocitool_trial(ref: str, image: CachedImage, env: dict[str, str]) -> Trial:
    def check(dest: Path, result: subprocess.CompletedProcess[str]) -> None:
        if result.stdout.strip() != image.digest:
            raise RuntimeError(f"ocitool printed {result.stdout.strip()!r}, expected {image.digest}")
        _need_files(dest / "images", image)

    return command_trial(lambda dest: [str(VENV_PYTHON), "-m", "ocitool", "--root", str(dest), "pull", "-q", ref],
                         WORK_DIR, env=env, check=check)


def skopeo_trial(ref: str, image: CachedImage, env: dict[str, str], keep_uncompressed: bool = True) -> Trial:
    """``skopeo copy`` into an OCI layout.

    By default skopeo's ``oci:`` destination gzips layers that are not compressed, i.e. it
    would produce a different image (new digests) at the cost of compressing; with
    ``keep_uncompressed`` it copies them verbatim, like ocitool, and we check the blobs.
    """
    tag = ref.rpartition(":")[2]
    flags = ["--dest-oci-accept-uncompressed-layers"] if keep_uncompressed else []

    def check(dest: Path, _result: subprocess.CompletedProcess[str]) -> None:
        if keep_uncompressed:
            _need_files(dest, image)
        elif not (dest / "index.json").is_file():
            raise RuntimeError(f"{dest}: skopeo wrote no index.json")

    return command_trial(lambda dest: ["skopeo", "copy", "-q", "--src-tls-verify=false", *flags,
                                       f"docker://{ref}", f"oci:{dest}:{tag}"],
                         WORK_DIR, env=env, check=check)


def curl_command(registry_url: str, repository: str, image: CachedImage, parallel: int) -> list[str]:
    """``curl -sf URL | sha256sum`` for every layer, ``parallel`` at a time, via xargs."""
    urls = " ".join(f"{registry_url}/v2/{repository}/blobs/{layer.digest}" for layer in image.layers)
    script = f"printf '%s\\n' {urls} | xargs -P {parallel} -I{{}} sh -c 'curl -sf {{}} | sha256sum'"
    return ["bash", "-c", script]


def curl_trial(registry_url: str, repository: str, image: CachedImage, parallel: int) -> Trial:
    argv = curl_command(registry_url, repository, image, parallel)

    def check(_state: None, result: subprocess.CompletedProcess[str]) -> None:
        sums = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
        wanted = {layer.digest.partition(":")[2] for layer in image.layers}
        if sums != wanted:
            raise RuntimeError(f"curl | sha256sum gave {sorted(sums)}, expected {sorted(wanted)}")

    return Trial(run=lambda _state: run_checked(argv), check=check, describe=argv[-1])


# -- main --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=None, help="timed runs per tool (default 5, 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small images and 3 runs: a smoke check")
    parser.add_argument("--only", choices=("multi", "large"), help="benchmark one image only")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--check", action="store_true", help="exit with status 1 when a target is missed")
    args = parser.parse_args(argv)
    runs = args.runs or (3 if args.quick else 5)
    if runs < 1:
        parser.error("--runs must be at least 1")
    chosen = [s for s in specs(args.quick) if args.only in (None, s.name)]

    cache = ImageCache()
    images = {spec.name: cache.get(f"pull-{spec.name}", spec.params, spec.build) for spec in chosen}
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="home-", dir=WORK_DIR))
    env = clean_env(home)

    rows: list[list[str]] = []
    details: list[str] = []
    verdicts: list[bool] = []
    registry = start_registry(REGISTRY_STORAGE)
    try:
        log(f"registry on {registry.url}, storage {REGISTRY_STORAGE}")
        for spec in chosen:
            image = images[spec.name]
            repository = f"bench/{spec.name}"
            ref = ensure_pushed(registry, repository, f"k{image.key}", image)
            label = spec.label(image)
            trials: dict[str, Trial] = {"ocitool": ocitool_trial(ref, image, env),
                                        "skopeo": skopeo_trial(ref, image, env)}
            if spec.name == "large":
                trials[f"curl|sha256sum x{PULL_JOBS}"] = curl_trial(registry.url, repository, image, PULL_JOBS)
                trials["curl|sha256sum seq"] = curl_trial(registry.url, repository, image, 1)
                trials[SKOPEO_GZIP] = skopeo_trial(ref, image, env, keep_uncompressed=False)
            log(f"{label}: {runs} runs per tool")
            times = alternate(trials, runs, warmup=args.warmup)
            med = {name: median(values) for name, values in times.items()}
            nbytes = image.layer_bytes
            ratio = med["ocitool"] / med["skopeo"]

            def row(name: str, figure: str, target: str = "", met: str = "") -> list[str]:
                tool = name.replace("|", "\\|")
                return [label, tool, f"{med[name]:.3f}", spread(times[name]), figure, target, met]

            if spec.name == "multi":
                ok = ratio <= SKOPEO_TARGET
                verdicts.append(ok)
                rows.append(row("ocitool", f"{ratio:.2f}x skopeo", f"<= {SKOPEO_TARGET:.1f}x skopeo", yes_no(ok)))
                rows.append(row("skopeo", "1.00x (baseline)"))
            else:
                anchor = f"curl|sha256sum x{PULL_JOBS}"
                share = med[anchor] / med["ocitool"]  # same bytes, so throughput ratio = inverse time ratio
                ok = share >= CURL_TARGET
                verdicts.append(ok)
                rows.append(row("ocitool", f"{throughput(nbytes, med['ocitool']):.0f} MiB/s = {share:.0%} of curl "
                                           f"x{PULL_JOBS}; {ratio:.2f}x skopeo",
                                f">= {CURL_TARGET:.0%} of curl x{PULL_JOBS}", yes_no(ok)))
                rows.append(row("skopeo", f"{throughput(nbytes, med['skopeo']):.0f} MiB/s = "
                                          f"{med[anchor] / med['skopeo']:.0%} of curl x{PULL_JOBS}"))
                rows.append(row(anchor, f"{throughput(nbytes, med[anchor]):.0f} MiB/s (anchor)"))
                seq = "curl|sha256sum seq"
                rows.append(row(seq, f"{throughput(nbytes, med[seq]):.0f} MiB/s "
                                     f"(ocitool = {med[seq] / med['ocitool']:.0%} of it)"))
                rows.append(row(SKOPEO_GZIP, f"{throughput(nbytes, med[SKOPEO_GZIP]):.0f} MiB/s; without "
                                             "--dest-oci-accept-uncompressed-layers: other digests, info only"))
            for name, trial in trials.items():
                details.append(f"- {spec.name} / {name}: `{trial.describe}`; runs (s): "
                               + ", ".join(f"{t:.3f}" for t in times[name]))
    finally:
        registry.stop()
        shutil.rmtree(home, ignore_errors=True)

    versions = {"ocitool": tool_version([str(VENV_PYTHON), "-m", "ocitool", "--version"]).split()[-1],
                "skopeo": tool_version(["skopeo", "--version"]).split()[-1],
                "curl": (tool_version(["curl", "--version"]).split() + ["?", "?"])[1],
                "docker-registry": tool_version(["/usr/bin/docker-registry", "--version"]).split()[-1],
                "Python": sys.version.split()[0]}
    versions["ocitool"] += f" (git {git_revision(paths=['ocitool'])})"
    print_header("pull", argv, versions)
    print(f"- method: one loopback docker-registry (HTTP); {runs} timed runs per tool after {args.warmup} "
          "warm-up round, tools alternating (first tool rotating each round), each run into a fresh empty "
          "directory on the same ext4/page cache, removed and `sync`ed between runs; wall-clock time of the "
          "whole command (process start-up included); throughput = layer bytes / median time; "
          "PYTHONDONTWRITEBYTECODE unset for the tools, so ocitool runs with its bytecode cache like an "
          "installed copy\n")
    print(markdown_table(["image", "tool", "median s", "min-max s", "ratio / throughput", "target", "met"], rows))
    print("\nCommands and raw times (DEST = fresh empty directory):\n")
    print("\n".join(details))
    print(f"\nAll targets met: {yes_no(all(verdicts))}")
    return 1 if args.check and not all(verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
