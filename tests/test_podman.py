"""podman drives ocitool-runtime as its OCI runtime (via conmon), on an image from a local registry."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

RUNTIME = str(Path(sys.executable).parent / "ocitool-runtime")
PODMAN_FLAGS = ["--cgroup-manager", "cgroupfs", "--events-backend", "file", "--storage-driver", "vfs"]
RUN_FLAGS = ["--network", "host", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


@pytest.fixture
def podman(tmp_path, registry):
    """podman with private storage, our runtime, and busybox pulled from the test registry."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (make test installs it)")
    runroot = tempfile.mkdtemp(prefix="ocpr-")  # podman refuses a runroot path over 50 characters
    base = ["podman", "--root", str(tmp_path / "storage"), "--runroot", runroot, *PODMAN_FLAGS,
            "--runtime", RUNTIME]

    def run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*base, *args], capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"podman {args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    run("pull", "--tls-verify=false", f"{registry.host}/library/busybox:latest")
    run.image = f"{registry.host}/library/busybox:latest"
    yield run
    run("rm", "--all", "--force", check=False)
    shutil.rmtree(runroot, ignore_errors=True)


def test_podman_run_rm(podman):
    result = podman("run", "--rm", *RUN_FLAGS, podman.image, "sh", "-c", "echo hello from $(hostname); id -u")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("hello from") and lines[1] == "0"


def test_podman_exit_code(podman):
    assert podman("run", "--rm", *RUN_FLAGS, podman.image, "sh", "-c", "exit 42", check=False).returncode == 42


def test_podman_detached_exec_and_stop(podman):
    name = "ocitool-podman-exec"
    podman("run", "-d", "--name", name, *RUN_FLAGS, podman.image, "sleep", "60")
    assert podman("exec", name, "sh", "-c", "echo in-$(hostname)").stdout.startswith("in-")
    assert podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip() == "running"
    podman("rm", "--force", name)
