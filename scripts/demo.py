"""`make demo`: a local registry seeded with busybox, made the docker.io mirror, then ocitool at work:
pull, unpack into a bundle, and run a container.

Uses the same registry runner and image builder as the tests (tests/support), so the
demo needs nothing from the internet: busybox comes from Debian's busybox-static.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from support.images import busybox_image  # noqa: E402
from support.push import push_image  # noqa: E402
from support.registry import RegistryServer  # noqa: E402


def step(workdir: Path, *args: str) -> None:
    """Show and run one ocitool command, stopping the demo if it fails."""
    print(f"\n$ ocitool {shlex.join(args)}", flush=True)
    env = {**os.environ, "OCITOOL_ROOT": str(workdir / "root"), "OCITOOL_CONFIG": str(workdir / "config.toml")}
    subprocess.run([sys.executable, "-m", "ocitool", *args], env=env, check=True)


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="ocitool-demo-"))
    with RegistryServer() as registry:
        push_image(registry.url, "library/busybox", "latest", busybox_image())
        config = f'[registries."docker.io"]\nmirrors = ["{registry.host}"]\n'
        (workdir / "config.toml").write_text(config)
        print(f"Local registry on {registry.host}, seeded with busybox from Debian's busybox-static.")
        print(f"Config {workdir / 'config.toml'}:\n{config}")
        step(workdir, "pull", "busybox")
        step(workdir, "images")
        step(workdir, "unpack", "busybox", str(workdir / "bundle"))
        print(f"  bundle: {', '.join(sorted(p.name for p in (workdir / 'bundle').iterdir()))}")
        step(workdir, "run", "--rm", "busybox:latest", "sh", "-c", "echo hello from $(hostname)")
    print(f"\nState is in {workdir} (OCITOOL_ROOT={workdir / 'root'}).")


if __name__ == "__main__":
    main()
