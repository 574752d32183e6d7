"""The runtime against real containers: busybox bundles run by ``ocitool-runtime``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from support.bundles import make_bundle, read_config, write_config

RUNTIME = [sys.executable, "-m", "ocitool", "runtime"]


class Runtime:
    """``ocitool runtime --root <tmp> ...``; output goes through files, not pipes, because a
    detached container keeps the runtime's stdio open (as with runc)."""

    def __init__(self, state_root: Path):
        self.state_root = state_root

    def __call__(self, *args: str, check: bool = True, timeout: float = 60,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            process = subprocess.run([*RUNTIME, "--root", str(self.state_root), *args], stdout=out, stderr=err,
                                     timeout=timeout, input=input, text=True,
                                     stdin=None if input is not None else subprocess.DEVNULL)
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(process.args, process.returncode, out.read(), err.read())
        if check and result.returncode != 0:
            raise AssertionError(f"runtime {args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def run(self, bundle: Path, name: str = "c1", **kwargs) -> subprocess.CompletedProcess[str]:
        return self("run", "--bundle", str(bundle), name, **kwargs)


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    rt = Runtime(tmp_path / "state")
    yield rt
    for name in rt("list", "-q", check=False).stdout.split():
        rt("delete", "--force", name, check=False)


def test_exit_code_and_output(runtime, tmp_path):
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", "echo out; echo err >&2; exit 3"])
    result = runtime.run(bundle, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not list((tmp_path / "state").iterdir())  # run deletes the container afterwards


def test_killed_by_signal_is_128_plus_n(runtime, tmp_path):
    bundle = make_bundle(tmp_path / "b", ["sleep", "30"])
    proc = subprocess.Popen([*RUNTIME, "--root", str(runtime.state_root), "run", "--bundle", str(bundle), "k9"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: "k9" in runtime("list", "-q").stdout and
              json.loads(runtime("state", "k9").stdout)["status"] == "running")
    runtime("kill", "k9", "9")
    assert proc.wait(timeout=30) == 137


def test_env_cwd_hostname_pid1(runtime, tmp_path):
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", 'echo "$GREETING $(pwd) $(hostname) $$"'],
                         process__env=["PATH=/bin", "GREETING=hello"], process__cwd="/tmp", hostname="box")
    assert runtime.run(bundle).stdout == "hello /tmp box 1\n"


def test_user_and_groups(runtime, tmp_path):
    bundle = make_bundle(tmp_path / "b", ["id"], process__user={"uid": 1000, "gid": 1001, "additionalGids": [10, 20]})
    assert runtime.run(bundle).stdout.strip() == "uid=1000 gid=1001 groups=10,20"


def test_mounts_readonly_root_and_masked_paths(runtime, tmp_path):
    script = ("grep -q ' /scratch tmpfs ' /proc/mounts && echo tmpfs-ok; "
              "touch /x 2>/dev/null || echo ro-ok; touch /scratch/x && echo scratch-ok; "
              "[ -z \"$(cat /proc/kcore 2>/dev/null | head -c 1)\" ] && echo masked-ok; "
              "touch /proc/sys/x 2>/dev/null || echo procsys-ro-ok")
    spec_bundle = make_bundle(tmp_path / "b", ["sh", "-c", script], root={"path": "rootfs", "readonly": True})
    spec = read_config(spec_bundle)
    spec["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]})
    write_config(spec_bundle, spec)
    out = runtime.run(spec_bundle).stdout.split()
    assert out == ["tmpfs-ok", "ro-ok", "scratch-ok", "masked-ok", "procsys-ro-ok"]


def test_capabilities_from_config(runtime, tmp_path):
    caps = ["CAP_CHOWN", "CAP_KILL"]
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", "grep -E '^Cap(Eff|Bnd|Prm)' /proc/self/status"],
                         process__capabilities={"bounding": caps, "effective": caps, "permitted": caps})
    lines = dict(line.split(":\t") for line in runtime.run(bundle).stdout.splitlines())
    expected = f"{(1 << 0) | (1 << 5):016x}"
    assert lines == {"CapPrm": expected, "CapEff": expected, "CapBnd": expected}


def test_seccomp_rule_makes_a_syscall_fail(runtime, tmp_path):
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", "mkdir /tmp/d 2>&1; touch /tmp/f && echo touch-ok"],
                         linux__seccomp=seccomp)
    for name in ("first", "cached"):  # the second run loads the program compiled by the first
        out = runtime.run(bundle, name=name).stdout
        assert "Operation not permitted" in out and "touch-ok" in out
    assert len(list((runtime.state_root / ".seccomp-cache").iterdir())) == 1


def test_memory_limit_oom_kills(runtime, tmp_path):
    hog = "x=$(dd if=/dev/zero bs=1M count=64 2>/dev/null | tr '\\0' a); echo survived"
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", hog],
                         linux__resources={"memory": {"limit": 16 * 1024 * 1024, "swap": 16 * 1024 * 1024}})
    result = runtime.run(bundle, check=False)
    assert result.returncode == 137 and "survived" not in result.stdout


def test_pids_limit(runtime, tmp_path):
    script = "for i in $(seq 30); do sleep 5 & done; echo all-started"
    limited = make_bundle(tmp_path / "limited", ["sh", "-c", script], linux__resources={"pids": {"limit": 10}})
    result = runtime.run(limited, check=False)
    assert result.returncode != 0 and "fork" in result.stderr and "all-started" not in result.stdout
    free = make_bundle(tmp_path / "free", ["sh", "-c", script.replace("sleep 5", "sleep 0.1")])
    assert runtime.run(free, name="c2").stdout == "all-started\n"


def test_lifecycle_create_start_state_kill_delete_list(runtime, tmp_path):
    bundle = make_bundle(tmp_path / "b", ["sleep", "60"])
    runtime("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), "life")
    state = json.loads(runtime("state", "life").stdout)
    assert state["status"] == "created" and state["id"] == "life" and state["bundle"] == str(bundle)
    assert state["pid"] == int((tmp_path / "pid").read_text())
    assert json.loads(runtime("list", "--format", "json").stdout)[0]["status"] == "created"
    runtime("start", "life")
    assert json.loads(runtime("state", "life").stdout)["status"] == "running"
    assert runtime("delete", "life", check=False).returncode != 0  # running: needs --force
    runtime("kill", "life", "KILL")
    _wait_for(lambda: json.loads(runtime("state", "life").stdout)["status"] == "stopped")
    runtime("delete", "life")
    assert runtime("state", "life", check=False).returncode != 0
    assert runtime("list", "-q").stdout.strip() == ""


def test_exec_into_running_container_and_ps(runtime, tmp_path):
    bundle = make_bundle(tmp_path / "b", ["sleep", "60"], hostname="execbox")
    runtime("run", "--detach", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), "ex")
    result = runtime("exec", "--env", "X=1", "--cwd", "/tmp", "ex", "sh", "-c", 'echo $X $(pwd) $(hostname)')
    assert result.stdout == "1 /tmp execbox\n"
    assert runtime("exec", "ex", "sh", "-c", "exit 4", check=False).returncode == 4
    pids = json.loads(runtime("ps", "--format", "json", "ex").stdout)
    assert int((tmp_path / "pid").read_text()) in pids
    missing = runtime("exec", "ex", "no-such-command", check=False)
    assert missing.returncode != 0 and "executable file not found" in missing.stderr
    runtime("delete", "--force", "ex")


def test_no_host_fds_leak_into_the_container(runtime, tmp_path):
    bundle = make_bundle(tmp_path / "b", ["ls", "/proc/self/fd"])
    leak = os.open("/", os.O_RDONLY)  # inheritable host fd in the runtime's parent
    os.set_inheritable(leak, True)
    try:
        result = subprocess.run([*RUNTIME, "--root", str(runtime.state_root), "run", "--bundle", str(bundle), "fd"],
                                capture_output=True, text=True, timeout=60, close_fds=False)
    finally:
        os.close(leak)
    assert sorted(result.stdout.split()) == ["0", "1", "2", "3"]  # 3 is ls's own directory fd


def _console_output(runtime, socket_path: str, args: list[str], expected: bytes) -> bytes:
    """Run ``runtime(*args)`` with a console socket listening at ``socket_path``; read the pty it
    receives until ``expected`` shows (or 10 s pass)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(socket_path)
    server.listen(1)
    received: list[int] = []

    def accept() -> None:
        connection, _ = server.accept()
        _, fds, _, _ = socket.recv_fds(connection, 1024, 1)
        received.extend(fds)
        connection.close()

    thread = threading.Thread(target=accept)
    thread.start()
    runtime(*args)
    thread.join(10)
    server.close()
    output = b""
    deadline = time.monotonic() + 10
    while expected not in output and time.monotonic() < deadline:
        output += os.read(received[0], 1024)
    os.close(received[0])
    return output


def test_console_socket_receives_the_pty(runtime, tmp_path):
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", "[ -t 0 ] && echo tty-ok; sleep 1"], process__terminal=True)
    socket_path = str(tmp_path / "console.sock")
    args = ["run", "--detach", "--console-socket", socket_path, "--bundle", str(bundle), "tty"]
    assert b"tty-ok" in _console_output(runtime, socket_path, args, b"tty-ok")


def test_exec_with_a_pty(runtime, tmp_path):
    """exec -t opens the pty inside the running container, after joining its mount namespace."""
    bundle = make_bundle(tmp_path / "b", ["sleep", "10"])
    runtime("run", "--detach", "--bundle", str(bundle), "host")
    socket_path = str(tmp_path / "console.sock")
    args = ["exec", "-t", "--detach", "--console-socket", socket_path, "host", "sh", "-c",
            "[ -t 0 ] && echo exec-tty-ok; sleep 1"]
    assert b"exec-tty-ok" in _console_output(runtime, socket_path, args, b"exec-tty-ok")


def test_hooks_receive_state_in_order(runtime, tmp_path):
    log = tmp_path / "hooks.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\nread state\necho \"$1 $state\" >> {log}\n")
    hook.chmod(0o755)
    stages = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
    hooks = {stage: [{"path": str(hook), "args": ["hook", stage]}] for stage in stages}
    bundle = make_bundle(tmp_path / "b", ["true"], hooks=hooks)
    # startContainer runs inside the container: its path must exist there too.
    (bundle / "rootfs" / str(hook).lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    (bundle / "rootfs" / str(hook).lstrip("/")).write_text("#!/bin/sh\nread state\necho \"$state\" > /started\n")
    (bundle / "rootfs" / str(hook).lstrip("/")).chmod(0o755)
    runtime.run(bundle, name="hooked")
    lines = log.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["prestart", "createRuntime", "createContainer", "poststart",
                                                  "poststop"]
    states = [json.loads(line.split(" ", 1)[1]) for line in lines]
    assert all(s["id"] == "hooked" and s["bundle"] == str(bundle) for s in states)
    assert states[-1]["status"] == "stopped"
    assert json.loads((bundle / "rootfs" / "started").read_text())["id"] == "hooked"


def test_start_container_hook_alone_runs_after_pivot_root(runtime, tmp_path):
    # The only hook runs inside the container, where the host's Python library is out of reach.
    bundle = make_bundle(tmp_path / "b", ["true"], hooks={"startContainer": [{"path": "/bin/sh",
                                                                              "args": ["sh", "-c", "cat > /s"]}]})
    runtime.run(bundle, name="started")
    assert json.loads((bundle / "rootfs" / "s").read_text())["id"] == "started"


def test_failing_hook_aborts_create_and_cleans_up(runtime, tmp_path):
    bundle = make_bundle(tmp_path / "b", ["true"], hooks={"createRuntime": [{"path": "/bin/false"}]})
    result = runtime("create", "--bundle", str(bundle), "bad", check=False)
    assert result.returncode != 0 and "hooks.createRuntime[0]" in result.stderr
    assert not (runtime.state_root / "bad").exists()


@pytest.mark.parametrize("change, field", [
    ({"process": {"args": [], "cwd": "/"}}, "process.args"),
    ({"process": {"args": ["true"], "cwd": "relative"}}, "process.cwd"),
    ({"mounts": [{"destination": "tmp", "type": "tmpfs"}]}, "mounts[0].destination"),
    ({"root": {"path": 5}}, "root.path"),
    ({"linux": {"namespaces": [{"type": "bogus"}]}}, "linux.namespaces"),
    ({"process": {"args": ["true"], "cwd": "/", "capabilities": {"bounding": ["CAP_NOPE"]}}}, "CAP_NOPE"),
])
def test_broken_config_names_the_field_and_leaves_nothing(runtime, tmp_path, change, field):
    bundle = make_bundle(tmp_path / "b", ["true"])
    spec = read_config(bundle)
    spec.update(change)
    write_config(bundle, spec)
    result = runtime("create", "--bundle", str(bundle), "broken", check=False)
    assert result.returncode != 0
    assert field in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (runtime.state_root / "broken").exists()
    assert not list(Path("/sys/fs/cgroup/pids").glob("**/broken"))


def test_not_json_config(runtime, tmp_path):
    bundle = make_bundle(tmp_path / "b", ["true"])
    (bundle / "config.json").write_text("{ nope")
    result = runtime("run", "--bundle", str(bundle), "x", check=False)
    assert result.returncode != 0 and "not valid JSON" in result.stderr


def test_mount_target_symlink_to_host_is_contained(runtime, tmp_path):
    """CVE-2021-30465 class: a rootfs symlink must not redirect a mount onto the host."""
    bait = tmp_path / "host-bait"
    bait.mkdir()
    bundle = make_bundle(tmp_path / "b", ["true"])
    (bundle / "rootfs" / "evil").symlink_to(str(bait))
    spec = read_config(bundle)
    spec["mounts"].append({"destination": "/evil/sub", "type": "tmpfs", "source": "tmpfs"})
    write_config(bundle, spec)
    runtime.run(bundle, check=False)
    assert not (bait / "sub").exists()
    assert str(bait) not in Path("/proc/self/mountinfo").read_text()


def test_runc_spec_bundle(runtime, tmp_path):
    bundle = tmp_path / "b"
    make_bundle(bundle, ["true"])
    (bundle / "config.json").unlink()
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    spec = read_config(bundle)
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["sh", "-c", "echo from-runc-spec"]
    write_config(bundle, spec)
    assert runtime.run(bundle).stdout == "from-runc-spec\n"


def test_spec_and_features(runtime, tmp_path):
    runtime("spec", "--bundle", str(tmp_path))
    assert read_config(tmp_path)["process"]["args"] == ["sh"]
    features = json.loads(runtime("features").stdout)
    assert "pid" in features["linux"]["namespaces"] and "CAP_CHOWN" in features["linux"]["capabilities"]


def test_foreground_run_forwards_signals(runtime, tmp_path):
    script = "trap 'echo got-term; exit 5' TERM; echo ready; sleep 30 & wait"
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", script])
    proc = subprocess.Popen([*RUNTIME, "--root", str(runtime.state_root), "run", "--bundle", str(bundle), "sig"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"  # the trap is set: PID 1 ignores signals it does not handle
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 5 and "got-term" in out


def _wait_for(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_runtime_process_is_out_of_reach_from_inside(runtime, tmp_path):
    """CVE-2019-5736 class: while the init (our Python) waits in the container, a container process
    cannot read or overwrite the runtime's interpreter through /proc/1/exe, nor reach its fds."""
    bundle = make_bundle(tmp_path / "b", ["sleep", "30"])
    runtime("create", "--bundle", str(bundle), "guarded")
    probe = ("cat /proc/1/exe > /dev/null 2>&1 && echo exe-readable || echo exe-denied; "
             "(echo x >> /proc/1/exe) 2>/dev/null && echo exe-writable || echo write-denied; "
             "for fd in $(ls /proc/1/fd); do readlink /proc/1/fd/$fd; done 2>/dev/null | wc -l")
    result = runtime("exec", "guarded", "sh", "-c", probe)
    assert result.stdout.split() == ["exe-denied", "write-denied", "0"], result.stdout + result.stderr
    runtime("delete", "--force", "guarded")


def test_security_labels_follow_the_host(runtime, tmp_path):
    """AppArmor/SELinux labels are applied where the host runs that LSM and ignored elsewhere (as runc)."""
    from ocitool.runtime.process import prepare_process
    config = {"args": ["true"], "cwd": "/", "apparmorProfile": "ocitool-test", "selinuxLabel": "system_u:r:t:s0"}
    labels = dict(prepare_process(config, None).labels)
    apparmor = Path("/sys/module/apparmor/parameters/enabled")
    assert ("apparmor/exec" in labels or "exec" in labels) == (apparmor.exists() and apparmor.read_text()[0] == "Y"
                                                                or Path("/sys/fs/selinux/enforce").exists())
    if not labels:
        bundle = make_bundle(tmp_path / "b", ["true"], process__apparmorProfile="ocitool-test")
        assert runtime.run(bundle).returncode == 0


def test_process_attributes_rlimits_umask_oom_nnp_domainname(runtime, tmp_path):
    script = ("ulimit -n; umask; cat /proc/self/oom_score_adj; grep NoNewPrivs /proc/self/status | tr -d '\\t'; "
              "cat /proc/sys/kernel/domainname")
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", script], domainname="example.test",
                         process__rlimits=[{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 512}],
                         process__user={"uid": 0, "gid": 0, "umask": 0o077}, process__oomScoreAdj=500,
                         process__noNewPrivileges=True)
    assert runtime.run(bundle).stdout.split() == ["512", "0077", "500", "NoNewPrivs:1", "example.test"]


def test_hook_timeout(runtime, tmp_path):
    bundle = make_bundle(tmp_path / "b", ["true"],
                         hooks={"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "10"], "timeout": 1}]})
    start = time.monotonic()
    result = runtime("create", "--bundle", str(bundle), "slowhook", check=False)
    assert result.returncode != 0 and "timed out after 1 s" in result.stderr
    assert time.monotonic() - start < 8 and not (runtime.state_root / "slowhook").exists()


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_errors_reach_the_log_file_in_runc_format(runtime, tmp_path, log_format):
    log_file = tmp_path / "runtime.log"
    result = runtime("--log", str(log_file), "--log-format", log_format, "state", "ghost", check=False)
    assert (result.returncode, result.stderr) == (1, "ocitool-runtime: error: container ghost does not exist\n")
    line = log_file.read_text().splitlines()[-1]
    if log_format == "json":  # what conmon parses: level, msg, time
        record = json.loads(line)
        assert (record["level"], record["msg"]) == ("error", "container ghost does not exist")
        assert record["time"].endswith("Z")
    else:
        assert line.endswith(" ERROR container ghost does not exist")


def test_usage_errors_are_one_line_with_status_2(runtime):
    result = runtime("kill", check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("ocitool-runtime: error: the following arguments are required: ID")
    assert len(result.stderr.splitlines()) == 1
    assert runtime("--help").stdout.startswith("usage: ocitool runtime")
    assert "--console-socket" in runtime("create", "--help").stdout


def test_cgroup_namespace_is_rooted_at_the_container_cgroup(runtime, tmp_path):
    # Stage one enters the cgroup (cloned into cgroup2, joining v1 itself) and only then makes
    # the cgroup namespace, which is rooted where it is made: the host's hierarchy must not show.
    bundle = make_bundle(tmp_path / "b", ["cat", "/proc/self/cgroup"])
    lines = runtime.run(bundle, name="rooted").stdout.splitlines()
    assert lines and all(line.endswith(":/") for line in lines), lines


def _has_cgroup2() -> bool:
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        return any(line.split()[2] == "cgroup2" for line in mounts)


@pytest.mark.skipif(os.geteuid() != 0 or not _has_cgroup2(), reason="needs root and a cgroup2 hierarchy")
def test_runs_on_a_pure_cgroup2_host(runtime, tmp_path):
    """With cgroup2 on /sys/fs/cgroup (here in a private mount namespace), as on most hosts:
    the container runs in a cgroup of its own (its cgroup namespace's root), where a v2 limit
    holds, and delete removes that cgroup."""
    script = ("root=/sys/fs/cgroup; mount -t cgroup2 none $root || exit 90; "
              '"$@"; status=$?; ls -d $root/ocitool/v2run 2>/dev/null && exit 91; exit $status')
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", "cat /proc/self/cgroup /sys/fs/cgroup/cgroup.max.descendants"],
                         linux__resources={"unified": {"cgroup.max.descendants": "3"}})
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                             *RUNTIME, "--root", str(runtime.state_root), "run", "--bundle", str(bundle), "v2run"],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert result.stdout.splitlines()[-2:] == ["0::/", "3"]  # after the v1 lines: every process has them


def test_run_loads_only_what_it_needs(runtime, tmp_path):
    """Engines start ocitool-runtime several times per container: a plain run must not load modules
    that cost milliseconds to import for little use (hooks would load subprocess; there are none)."""
    bundle = make_bundle(tmp_path / "b", ["true"])
    program = [sys.executable, "-c", "from ocitool.entry import ocitool_runtime; ocitool_runtime()"]
    result = subprocess.run([*program, "--root", str(runtime.state_root), "run", "--bundle", str(bundle), "lean"],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr
    loaded = {line.rpartition("|")[2].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "ocitool.runtime.container" in loaded  # the profile is there
    unneeded = {"click", "typing", "dataclasses", "logging", "shutil", "datetime", "threading", "subprocess",
                "tempfile", "hashlib", "socket", "termios", "pathlib", "argparse", "json", "re", "enum", "signal",
                "functools", "collections", "contextlib"}  # in the runtime nor in the init (listed too)
    assert not loaded & unneeded
