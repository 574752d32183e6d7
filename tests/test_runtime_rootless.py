"""The runtime as an unprivileged user: a user namespace maps the caller to root inside."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import as_user, user_python
from support.bundles import make_bundle


def _chown_tree(path: Path, user: tuple[int, int]) -> None:
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), *user)
    os.lchown(path, *user)


def rootless_run(user, user_dir: Path, args: list[str], **changes) -> subprocess.CompletedProcess[str]:
    bundle = make_bundle(user_dir / "bundle", args, rootless=True, uid=user[0], gid=user[1], **changes)
    _chown_tree(user_dir, user)
    command = [user_python(), "-m", "ocitool", "runtime", "run", "--bundle", str(bundle), "rootless"]
    return subprocess.run(as_user(user, command, user_dir), capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_rootless_container_runs_as_root_inside(unprivileged_user, user_dir):
    result = rootless_run(unprivileged_user, user_dir,
                          ["sh", "-c", "id; hostname; echo $$; cat /proc/self/uid_map; exit 7"], hostname="rl")
    assert result.returncode == 7, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("uid=0(root) gid=0(root)")
    assert lines[1:3] == ["rl", "1"]
    assert lines[3].split() == ["0", str(unprivileged_user[0]), "1"]


def test_rootless_devices_and_readonly_sys(unprivileged_user, user_dir):
    script = "echo x > /dev/null && head -c 4 /dev/zero | wc -c; touch /sys/x 2>/dev/null || echo sys-ro"
    result = rootless_run(unprivileged_user, user_dir, ["sh", "-c", script])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["4", "sys-ro"]


def test_rootless_state_lives_in_xdg_runtime_dir(unprivileged_user, user_dir):
    result = rootless_run(unprivileged_user, user_dir, ["true"])
    assert result.returncode == 0, result.stderr
    assert (user_dir / "run" / "ocitool-runtime").is_dir()
