"""``ocitool run`` end to end: a real registry as docker.io's mirror, real containers."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import as_user, user_python


@pytest.fixture
def run(ocitool, registry):
    """ocitool with the test registry as the docker.io mirror; ``run(*args)`` runs ``ocitool run``."""
    ocitool.write_config(f'[registries."docker.io"]\nmirrors = ["{registry.host}"]\n')

    def invoke(*args: str, check: bool = False, **kwargs) -> subprocess.CompletedProcess[str]:
        return ocitool("run", *args, check=check, **kwargs)

    invoke.ocitool = ocitool
    return invoke


def test_echo_hi(run):
    result = run("--rm", "busybox", "echo", "hi")
    assert (result.returncode, result.stdout) == (0, "hi\n"), result.stderr


def test_exit_codes(run, tmp_path):
    assert run("--rm", "busybox", "sh", "-c", "exit 7").returncode == 7
    missing = run("--rm", "busybox", "no-such-command")
    assert missing.returncode == 127 and "executable file not found" in missing.stderr
    assert run("--rm", "busybox", "/etc/passwd").returncode == 126
    image = run("--rm", "does-not-exist/at-all", "true")
    assert image.returncode == 125 and image.stderr.startswith("ocitool: error:")
    assert run("--rm", "--no-such-flag", "busybox").returncode == 125


def test_env_workdir_user(run, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("FROM_FILE=yes\n# comment\n")
    script = 'echo "$A $FROM_FILE $(pwd) $(id -u):$(id -g)"'
    result = run("--rm", "-e", "A=1", "--env-file", str(env_file), "-w", "/tmp", "-u", "nobody", "busybox",
                 "sh", "-c", script)
    assert result.stdout == "1 yes /tmp 65534:65534\n", result.stderr


def test_volumes_and_read_only(run, tmp_path):
    host = tmp_path / "shared"
    host.mkdir()
    (host / "in.txt").write_text("from the host\n")
    result = run("--rm", "-v", f"{host}:/data", "-v", f"{host}:/ro:ro", "busybox", "sh", "-c",
                 "cat /data/in.txt; echo out > /data/out.txt; (echo x > /ro/x) 2>/dev/null || echo ro-refused")
    assert result.stdout == "from the host\nro-refused\n", result.stderr
    assert (host / "out.txt").read_text() == "out\n" and not (host / "x").exists()
    read_only = run("--rm", "--read-only", "busybox", "sh", "-c", "touch /x 2>/dev/null || echo read-only")
    assert read_only.stdout == "read-only\n"


def test_network_none_has_only_lo(run):
    result = run("--rm", "--network", "none", "busybox", "cat", "/proc/net/dev")
    interfaces = [line.split(":")[0].strip() for line in result.stdout.splitlines()[2:]]
    assert interfaces == ["lo"], result.stdout + result.stderr
    up = run("--rm", "--network", "none", "busybox", "cat", "/sys/class/net/lo/operstate")
    assert up.stdout.strip() in ("unknown", "up")


def test_memory_limit_oom(run):
    hog = "x=$(dd if=/dev/zero bs=1M count=64 2>/dev/null | tr '\\0' a); echo survived"
    result = run("--rm", "-m", "16m", "busybox", "sh", "-c", hog)
    assert result.returncode == 137 and "survived" not in result.stdout
    assert "exceeding its memory limit" in result.stderr


def test_cache_reused_and_runs_isolated(run):
    ocitool = run.ocitool
    first = ocitool("--log-level", "info", "run", "busybox", "sh", "-c", "echo one > /mine; cat /mine")
    second = ocitool("--log-level", "info", "run", "busybox", "sh", "-c", "cat /mine 2>/dev/null || echo clean")
    assert "into the rootfs cache" in first.stderr and "into the rootfs cache" not in second.stderr
    assert (first.stdout, second.stdout) == ("one\n", "clean\n")
    cache = next((ocitool.root / "rootfs").glob("sha256_*"))
    assert not (cache / "rootfs" / "mine").exists()  # the cache is never written by a run
    listed = json.loads(ocitool("ps", "--format", "json").stdout)
    assert [row["exit_code"] for row in listed] == [0, 0]
    assert len(ocitool("prune").stdout.split()) == 2 and ocitool("ps", "--format", "json").stdout.strip() == "[]"


def test_warm_run_loads_only_what_it_needs(run):
    """With the image pulled and unpacked, start-up is most of a run: it must not read the
    config file or load the HTTP stack, the extraction code, --platform parsing, OpenSSL, the
    progress display, or standard modules that cost milliseconds to import for little use."""
    assert run("--rm", "busybox", "true").returncode == 0
    warm = run("--rm", "busybox", "true", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert warm.returncode == 0, warm.stderr
    loaded = {line.rpartition("|")[2].strip() for line in warm.stderr.splitlines() if line.startswith("import time:")}
    assert "ocitool.run" in loaded  # the profile is there
    unneeded = {"tomllib", "hashlib", "requests", "ocitool.image.pull", "ocitool.bundle.unpack",
                "ocitool.image.platform", "ocitool.progress", "click", "typing", "dataclasses", "logging",
                "shutil", "datetime", "threading", "subprocess", "tempfile", "termios", "argparse"}
    assert not loaded & unneeded


def test_cold_run_loads_only_what_it_needs(run):
    """A first run pulls and unpacks, yet loads no HTTP library (the plain-HTTP registry needs
    neither ssl nor http.client), no zstd for a gzip image, no tomllib for a simple config, and
    none of the standard modules that cost milliseconds to import for little use."""
    cold = run("--rm", "busybox", "true", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert cold.returncode == 0, cold.stderr
    loaded = {line.rpartition("|")[2].strip() for line in cold.stderr.splitlines() if line.startswith("import time:")}
    assert {"ocitool.image.pull", "ocitool.bundle.unpack"} <= loaded  # it did pull and unpack
    unneeded = {"requests", "urllib3", "http.client", "email", "ssl", "socket", "encodings.idna", "zstandard",
                "concurrent.futures", "dataclasses", "tempfile", "random", "subprocess", "platform", "tomllib",
                "logging", "argparse"}
    assert not loaded & unneeded, loaded & unneeded


def test_first_run_builds_the_seccomp_filter_meanwhile(run, monkeypatch):
    """On a root's first run a child compiles the run's seccomp profile into the runtime's cache
    while the image is fetched, so that the runtime only reads it back."""
    from ocitool import run as run_module
    from ocitool.runtime import seccomp

    root = run.ocitool.root
    options = run_module.RunOptions(cap_add=["SYS_ADMIN"])
    child = run_module._start_filter_build(root, options)
    assert child is not None and os.waitpid(child, 0)[1] == 0
    assert run_module._start_filter_build(root, options) is None  # a root with a cache: no child
    monkeypatch.setattr(seccomp, "_build_program", lambda spec: pytest.fail("the cached program was rebuilt"))
    profile = run_module.build_spec({"config": {"Cmd": ["true"]}}, root, options, False, "x")["linux"]["seccomp"]
    cache = os.path.join(root, "runtime", ".seccomp-cache")
    assert seccomp.compile_filter(profile, cache).program


def test_concurrent_runs_do_not_see_each_other(run):
    ocitool = run.ocitool
    ocitool("pull", "-q", "busybox")
    commands = [[sys.executable, "-m", "ocitool", "--root", str(ocitool.root), "--config", str(ocitool.config_path),
                 "run", "--rm", "busybox", "sh", "-c", f"echo {n} > /f; sleep 1; cat /f"] for n in (1, 2)]
    procs = [subprocess.Popen(c, env=ocitool.environment(), stdout=subprocess.PIPE, text=True) for c in commands]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert outputs == ["1\n", "2\n"]


def test_rm_leaves_nothing_behind(run):
    ocitool = run.ocitool
    mounts_before = Path("/proc/self/mountinfo").read_text()
    assert run("--rm", "--name", "tidy", "busybox", "true").returncode == 0
    assert not list((ocitool.root / "containers").iterdir())
    assert [p.name for p in (ocitool.root / "runtime").iterdir()] == [".seccomp-cache"]  # a cache, kept
    assert not list(Path("/sys/fs/cgroup/pids").glob("ocitool/tidy"))
    assert Path("/proc/self/mountinfo").read_text() == mounts_before


def test_name_in_use_and_rm(run):
    ocitool = run.ocitool
    assert run("--name", "named", "busybox", "true").returncode == 0
    again = run("--name", "named", "busybox", "true")
    assert again.returncode == 125 and "already exists" in again.stderr
    ocitool("rm", "named")
    assert run("--rm", "--name", "named", "busybox", "true").returncode == 0


def test_interactive_shell_through_a_pty(run):
    ocitool = run.ocitool
    ocitool("pull", "-q", "busybox")
    leader, follower = pty.openpty()
    command = [sys.executable, "-m", "ocitool", "--root", str(ocitool.root), "--config", str(ocitool.config_path),
               "run", "--rm", "-it", "busybox", "sh"]
    proc = subprocess.Popen(command, env=ocitool.environment(), stdin=follower, stdout=follower, stderr=follower,
                            start_new_session=True)
    os.close(follower)
    output = bytearray()
    reader = threading.Thread(target=_drain, args=(leader, output), daemon=True)
    reader.start()
    _wait_for(lambda: b"#" in output or b"$" in output, 30)
    os.write(leader, b"echo inside-$((40+2))\n")
    _wait_for(lambda: b"inside-42" in output, 10)
    os.write(leader, b"exit 3\n")
    assert proc.wait(timeout=30) == 3


def _drain(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            return
        if not chunk:
            return
        into.extend(chunk)


def test_sigterm_reaches_the_container_and_kill_takes_it_down(run):
    ocitool = run.ocitool
    ocitool("pull", "-q", "busybox")
    base = [sys.executable, "-m", "ocitool", "--root", str(ocitool.root), "--config", str(ocitool.config_path), "run",
            "--rm"]
    script = "trap 'echo term; exit 9' TERM; echo ready; while :; do sleep 0.1; done"
    trap = subprocess.Popen([*base, "busybox", "sh", "-c", script], env=ocitool.environment(),
                            stdout=subprocess.PIPE, text=True)
    assert trap.stdout.readline() == "ready\n"  # the trap is set
    trap.send_signal(signal.SIGTERM)
    assert trap.wait(timeout=30) == 9 and trap.stdout.read() == "term\n"
    victim = subprocess.Popen([*base, "--name", "orphan", "busybox", "sleep", "300"], env=ocitool.environment())
    _wait_for(lambda: _pids_running("sleep 300"), 30)
    sleepers = _pids_running("sleep 300")
    victim.kill()  # SIGKILL: ocitool cannot clean up, but the container must not outlive it
    victim.wait()
    _wait_for(lambda: not any(_alive(pid) for pid in sleepers), 10)
    # The next ocitool run finishes what the killed one left: runtime state, cgroup, the --rm run.
    assert run("--rm", "busybox", "true").returncode == 0
    assert not (ocitool.root / "containers" / "orphan").exists()
    assert not (ocitool.root / "runtime" / "orphan").exists()
    assert not Path("/sys/fs/cgroup/pids/ocitool/orphan").exists()


def _pids_running(cmdline: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip() == cmdline:
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_rootless_run_as_unprivileged_user(registry, unprivileged_user, user_dir):
    config = user_dir / "config.toml"
    config.write_text(f'[registries."docker.io"]\nmirrors = ["{registry.host}"]\n')
    os.chown(config, *unprivileged_user)
    command = [user_python(), "-m", "ocitool", "--root", str(user_dir / "root"), "--config", str(config), "run",
               "--rm", "busybox", "sh", "-c", "id -u; echo x > /written && cat /written; exit 4"]
    result = subprocess.run(as_user(unprivileged_user, command, user_dir), capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 4, result.stderr
    assert result.stdout == "0\nx\n"


def _wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
