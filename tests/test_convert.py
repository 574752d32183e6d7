"""Image config to runtime config (image-spec conversion.md), user resolution inside the
rootfs (never reading the host's files), and real runs of the result with runc and crun."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from ocitool.bundle.convert import resolve_user, runtime_config
from ocitool.bundle.spec import DEFAULT_PATH, default_spec, write_spec
from ocitool.errors import OcitoolError

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment:x:5:5
broken:x:notanumber:1::/:/bin/sh
app:x:1000:1000:App:/home/app:/bin/sh
other:x:1001:1001::/:/bin/sh
1234:x:2345:2345:a numeric name:/:/bin/sh
"""
GROUP = """\
root:x:0:
wheel:x:10:root
audio:x:29:app,other
video:x:44:other,app
staff:x:50:app
app:x:1000:
again:x:29:app
short:x:77
"""
BAIT_USER, BAIT_GROUP = "baituser7f3a", "baitgroup7f3a"
BAIT_PASSWD = f"{BAIT_USER}:x:4242:4242::/:/bin/sh\napp:x:4242:4242::/:/bin/sh\n"
BAIT_GROUP_FILE = f"{BAIT_GROUP}:x:4343:app\n"
A = "org.opencontainers.image."


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """tmp/outer/mid/rootfs with passwd and group; the host side has bait files around it."""
    root = tmp_path / "outer" / "mid" / "rootfs"
    _write(root / "etc" / "passwd", PASSWD)
    _write(root / "etc" / "group", GROUP)
    for etc in (tmp_path / "outer" / "etc", tmp_path / "etc"):
        _write(etc / "passwd", BAIT_PASSWD)
        _write(etc / "group", BAIT_GROUP_FILE)
    return root


def _image(**config: object) -> dict:
    return {"architecture": "amd64", "os": "linux", "config": config,
            "rootfs": {"type": "layers", "diff_ids": []}}


# --- users -----------------------------------------------------------------------------

@pytest.mark.parametrize("user, expected", [
    ("", (0, 0, [])),
    ("root", (0, 0, [10])),
    ("daemon", (1, 1, [])),
    ("app", (1000, 1000, [29, 44, 50])),           # member lists, file order, once each
    ("1000", (1000, 1000, [])),                    # numeric: passwd gid, no additional gids
    ("4242", (4242, 0, [])),                       # numeric, not in passwd
    ("1234", (1234, 0, [])),                       # numeric means uid, never a name
    ("1000:44", (1000, 44, [])),
    ("4242:7", (4242, 7, [])),
    ("app:video", (1000, 44, [])),                 # an explicit group: no additional gids
    ("app:44", (1000, 44, [])),
    ("1000:video", (1000, 44, [])),
    ("4242:video", (4242, 44, [])),
    ("other:audio", (1001, 29, [])),
    ("app:short", (1000, 77, [])),                 # a group line without a member list
    ("4294967294", (4294967294, 0, [])),
])
def test_resolve_user(rootfs: Path, user: str, expected: tuple) -> None:
    assert resolve_user(rootfs, user) == expected


@pytest.mark.parametrize("user, message", [
    ("nosuch", "user 'nosuch' not found in the image's /etc/passwd"),
    ("broken", "user 'broken' not found"),
    ("-1", "user '-1' not found"),
    ("app:nosuch", "group 'nosuch' not found in the image's /etc/group"),
    ("1000:nosuch", "group 'nosuch' not found"),
    (":0", "invalid user ':0'"),
    ("app:", "invalid user 'app:'"),
    ("app:video:x", "invalid user"),
    ("4294967295", "out of range"),
    ("0:4294967296", "out of range"),
])
def test_resolve_user_errors(rootfs: Path, user: str, message: str) -> None:
    with pytest.raises(OcitoolError, match=message):
        resolve_user(rootfs, user)


def test_rootfs_without_etc_files(tmp_path: Path) -> None:
    assert resolve_user(tmp_path, "1000") == (1000, 0, [])
    assert resolve_user(tmp_path, "1000:5") == (1000, 5, [])
    with pytest.raises(OcitoolError, match="user 'app' not found"):
        resolve_user(tmp_path, "app")


def test_numeric_user_and_group_need_no_rootfs(tmp_path: Path) -> None:
    assert resolve_user(tmp_path / "missing", "7:8") == (7, 8, [])
    with pytest.raises(OcitoolError, match="cannot open root filesystem"):
        resolve_user(tmp_path / "missing", "app")


# --- hostile rootfs: nothing outside the rootfs is ever read -----------------------------

def _link(path: Path, target: str | Path) -> None:
    path.unlink(missing_ok=True)
    path.symlink_to(target)


@pytest.mark.parametrize("target", [
    "{tmp}/outer/etc/passwd",       # absolute host path
    "../../../etc/passwd",          # climbs out on the host; clamps to itself in the rootfs
    "../../../../etc/passwd",
    "/../../../etc/passwd",
    "../../../outer/etc/passwd",
])
def test_hostile_passwd_symlink_is_not_followed_out(rootfs: Path, tmp_path: Path,
                                                    target: str) -> None:
    _link(rootfs / "etc" / "passwd", target.format(tmp=tmp_path))
    with pytest.raises(OcitoolError):
        resolve_user(rootfs, BAIT_USER)
    assert resolve_user(rootfs, "1000:5") == (1000, 5, [])


def test_escaping_symlink_resolves_inside_the_rootfs(rootfs: Path) -> None:
    # On the host this would be tmp/etc/passwd (the bait); inside it is /etc/real.
    _write(rootfs / "etc" / "real", "app:x:7:8::/:/bin/sh\n")
    _link(rootfs / "etc" / "passwd", "../../../../etc/real")
    assert resolve_user(rootfs, "app") == (7, 8, [29, 44, 50])
    with pytest.raises(OcitoolError, match=f"user '{BAIT_USER}' not found"):
        resolve_user(rootfs, BAIT_USER)


def test_absolute_symlink_resolves_inside_the_rootfs(rootfs: Path) -> None:
    _write(rootfs / "usr" / "lib" / "passwd", "app:x:9:9::/:/bin/sh\n")
    _link(rootfs / "etc" / "passwd", "/usr/lib/passwd")
    assert resolve_user(rootfs, "app")[:2] == (9, 9)


@pytest.mark.parametrize("target", ["{tmp}/outer/etc", "../../../outer/etc", "/../outer/etc"])
def test_hostile_etc_directory_symlink(rootfs: Path, tmp_path: Path, target: str) -> None:
    shutil.rmtree(rootfs / "etc")
    _link(rootfs / "etc", target.format(tmp=tmp_path))
    with pytest.raises(OcitoolError, match=f"user '{BAIT_USER}' not found"):
        resolve_user(rootfs, BAIT_USER)
    with pytest.raises(OcitoolError, match=f"group '{BAIT_GROUP}' not found"):
        resolve_user(rootfs, f"0:{BAIT_GROUP}")


def test_hostile_group_symlink(rootfs: Path, tmp_path: Path) -> None:
    _link(rootfs / "etc" / "group", tmp_path / "outer" / "etc" / "group")
    assert resolve_user(rootfs, "app") == (1000, 1000, [])
    with pytest.raises(OcitoolError, match=f"group '{BAIT_GROUP}' not found"):
        resolve_user(rootfs, f"app:{BAIT_GROUP}")


def test_symlink_loop_is_an_error(rootfs: Path) -> None:
    _link(rootfs / "etc" / "passwd", "passwd2")
    _link(rootfs / "etc" / "passwd2", "/etc/passwd")
    with pytest.raises(OcitoolError, match="cannot read /etc/passwd in the image: Too many"):
        resolve_user(rootfs, "app")


@pytest.mark.parametrize("make", [os.mkfifo, os.mkdir])
def test_passwd_that_is_not_a_file(rootfs: Path, make) -> None:
    (rootfs / "etc" / "passwd").unlink()
    make(rootfs / "etc" / "passwd")
    with pytest.raises(OcitoolError, match="not a regular file"):
        resolve_user(rootfs, "app")


# --- conversion rules ------------------------------------------------------------------

@pytest.mark.parametrize("config, expected_args", [
    ({"Cmd": ["sh", "-c", "true"]}, ["sh", "-c", "true"]),
    ({"Entrypoint": ["/entry"]}, ["/entry"]),
    ({"Entrypoint": ["/entry", "-v"], "Cmd": ["a", "b"]}, ["/entry", "-v", "a", "b"]),
    ({"Entrypoint": None, "Cmd": ["x"]}, ["x"]),
    ({"Entrypoint": ["e"], "Cmd": None}, ["e"]),
])
def test_args(rootfs: Path, config: dict, expected_args: list[str]) -> None:
    assert runtime_config(_image(**config), rootfs, rootless=False)["process"]["args"] \
        == expected_args


@pytest.mark.parametrize("config", [{}, {"Cmd": []}, {"Cmd": None, "Entrypoint": None},
                                    {"Entrypoint": [], "Cmd": []}])
def test_no_command_gives_empty_args(rootfs: Path, config: dict) -> None:
    """A base image without a command still converts; the command comes at run time."""
    assert runtime_config(_image(**config), rootfs, rootless=False)["process"]["args"] == []


@pytest.mark.parametrize("env, expected", [
    (None, [f"PATH={DEFAULT_PATH}"]),
    ([], [f"PATH={DEFAULT_PATH}"]),
    (["A=1", "B="], ["A=1", "B=", f"PATH={DEFAULT_PATH}"]),
    (["PATH=/bin", "A=1"], ["PATH=/bin", "A=1"]),
    (["PATH=", "TERM=dumb"], ["PATH=", "TERM=dumb"]),
    (["X=a=b"], ["X=a=b", f"PATH={DEFAULT_PATH}"]),
])
def test_env(rootfs: Path, env: list[str] | None, expected: list[str]) -> None:
    spec = runtime_config(_image(Cmd=["sh"], Env=env), rootfs, rootless=False)
    assert spec["process"]["env"] == expected


@pytest.mark.parametrize("working_dir, cwd", [
    (None, "/"), ("", "/"), ("/srv/app", "/srv/app"), ("app", "/app"), ("/", "/"),
])
def test_cwd(rootfs: Path, working_dir: str | None, cwd: str) -> None:
    spec = runtime_config(_image(Cmd=["sh"], WorkingDir=working_dir), rootfs, rootless=False)
    assert spec["process"]["cwd"] == cwd


@pytest.mark.parametrize("user, expected", [
    (None, {"uid": 0, "gid": 0}),
    ("", {"uid": 0, "gid": 0}),
    ("app", {"uid": 1000, "gid": 1000, "additionalGids": [29, 44, 50]}),
    ("1001", {"uid": 1001, "gid": 1001}),
    ("app:staff", {"uid": 1000, "gid": 50}),
])
def test_process_user(rootfs: Path, user: str | None, expected: dict) -> None:
    for rootless in (False, True):
        spec = runtime_config(_image(Cmd=["sh"], User=user), rootfs, rootless=rootless)
        assert spec["process"]["user"] == expected


def test_unknown_user_is_an_error(rootfs: Path) -> None:
    with pytest.raises(OcitoolError, match="user 'ghost' not found"):
        runtime_config(_image(Cmd=["sh"], User="ghost"), rootfs, rootless=False)


def test_implicit_annotations(rootfs: Path) -> None:
    image = _image(Cmd=["sh"], StopSignal="SIGQUIT",
                   ExposedPorts={"80/tcp": {}, "53/udp": {}, "443/tcp": {}},
                   Volumes={"/data": {}})
    image.update({"created": "2024-01-02T03:04:05.123456789Z", "author": "Jane <j@x>",
                  "variant": "v8", "os.version": "10.0", "os.features": ["a", "b"]})
    assert runtime_config(image, rootfs, rootless=False)["annotations"] == {
        A + "os": "linux",
        A + "architecture": "amd64",
        A + "variant": "v8",
        A + "os.version": "10.0",
        A + "os.features": "a,b",
        A + "author": "Jane <j@x>",
        A + "created": "2024-01-02T03:04:05.123456789Z",
        A + "stopSignal": "SIGQUIT",
        A + "exposedPorts": "443/tcp,53/udp,80/tcp",
    }


def test_labels_become_annotations_and_win(rootfs: Path) -> None:
    image = _image(Cmd=["sh"], StopSignal="SIGTERM", ExposedPorts={"80/tcp": {}},
                   Labels={"com.example.a": "1", A + "os": "labelled", A + "stopSignal": "SIGINT",
                           A + "exposedPorts": "9/tcp", "empty": ""})
    annotations = runtime_config(image, rootfs, rootless=False)["annotations"]
    assert annotations["com.example.a"] == "1"
    assert annotations["empty"] == ""
    assert annotations[A + "os"] == "labelled"
    assert annotations[A + "stopSignal"] == "SIGINT"
    assert annotations[A + "exposedPorts"] == "9/tcp"
    assert annotations[A + "architecture"] == "amd64"


def test_carried_annotations_rank_below_the_config(rootfs: Path) -> None:
    image = _image(Cmd=["sh"], Labels={"com.example.label": "label"})
    image["created"] = "2024-01-01T00:00:00Z"
    carried = {A + "created": "from-manifest", "com.example.label": "from-manifest",
               "com.example.manifest": "m"}
    annotations = runtime_config(image, rootfs, rootless=False, annotations_source=carried)
    assert annotations["annotations"][A + "created"] == "2024-01-01T00:00:00Z"
    assert annotations["annotations"]["com.example.label"] == "label"
    assert annotations["annotations"]["com.example.manifest"] == "m"


def test_no_annotations_when_the_image_has_none(rootfs: Path) -> None:
    assert "annotations" not in runtime_config({"config": {"Cmd": ["sh"]}}, rootfs,
                                               rootless=False)


def test_volumes_are_noted_not_mounted(rootfs: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    spec = runtime_config(_image(Cmd=["sh"], Volumes={"/data": {}, "/cache": {}}), rootfs,
                          rootless=False)
    assert spec["mounts"] == default_spec()["mounts"]
    assert "/cache, /data are not mounted" in caplog.text


@pytest.mark.parametrize("rootless", [False, True])
def test_everything_else_is_the_default_spec(rootfs: Path, rootless: bool) -> None:
    spec = runtime_config(_image(Cmd=["sh"]), rootfs, rootless=rootless)
    default = default_spec(rootless)
    assert spec["root"] == {"path": "rootfs", "readonly": False}
    for key in ("mounts", "linux", "hostname", "ociVersion"):
        assert spec[key] == default[key]
    for key in ("capabilities", "rlimits", "noNewPrivileges", "terminal"):
        assert spec["process"][key] == default["process"][key]


def test_the_image_config_is_not_modified(rootfs: Path) -> None:
    image = _image(Cmd=["sh"], Env=["A=1"], Labels={"x": "y"})
    before = copy.deepcopy(image)
    runtime_config(image, rootfs, rootless=False)
    assert image == before


@pytest.mark.parametrize("image, message", [
    (_image(Cmd="sh"), "Cmd is not a list of strings"),
    (_image(Entrypoint=[1]), "Entrypoint is not a list of strings"),
    (_image(Cmd=["sh"], Env=["NOEQUALS"]), "Env entry 'NOEQUALS' is not NAME=VALUE"),
    (_image(Cmd=["sh"], Env=["=x"]), "Env entry '=x'"),
    (_image(Cmd=["sh"], Labels={"a": 1}), "Labels is not an object of strings"),
    (_image(Cmd=["sh"], Labels=["a"]), "Labels is not an object of strings"),
    (_image(Cmd=["sh"], ExposedPorts=["80/tcp"]), "ExposedPorts is not an object"),
    (_image(Cmd=["sh"], WorkingDir=5), "WorkingDir is not a string"),
    (_image(Cmd=["sh"], User=0), "User is not a string"),
    ({"os": "linux", "config": ["sh"]}, "'config' is not an object"),
    ({"os": "windows", "config": {"Cmd": ["cmd"]}}, "only linux images"),
])
def test_malformed_image_configs(rootfs: Path, image: dict, message: str) -> None:
    with pytest.raises(OcitoolError, match=message):
        runtime_config(image, rootfs, rootless=False)


# --- real runs -------------------------------------------------------------------------

@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A bundle whose rootfs is Debian's static busybox and a passwd/group."""
    busybox = Path("/bin/busybox")
    if os.geteuid() != 0 or not busybox.exists():
        pytest.skip("needs root and busybox-static")
    root = tmp_path / "bundle" / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    for name in ("sh", "echo", "true", "id", "cat"):
        (root / "bin" / name).symlink_to("busybox")
    _write(root / "etc" / "passwd", PASSWD)
    _write(root / "etc" / "group", GROUP)
    return root.parent


def _runtime(name: str, tmp_path: Path) -> list[str]:
    if shutil.which(name) is None:
        pytest.skip(f"{name} is not installed")
    return [name, "--root", str(tmp_path / f"{name}-state")]


def _run(command: list[str], bundle: Path) -> str:
    container = f"ocitool-test-{uuid.uuid4().hex[:12]}"
    result = subprocess.run([*command, "run", "--bundle", str(bundle), container],
                            capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _without_hybrid_cgroups(command: list[str]) -> list[str]:
    """crun refuses cgroup v1 next to a v2 "unified" mount: unmount it in a private namespace."""
    if Path("/sys/fs/cgroup/cgroup.controllers").exists() \
            or not os.path.ismount("/sys/fs/cgroup/unified"):
        return command
    return ["unshare", "-m", "sh", "-c", 'umount /sys/fs/cgroup/unified && exec "$@"', "sh",
            *command]


def _prepare(bundle: Path, rootless: bool = False, **config: object) -> None:
    write_spec(bundle, runtime_config(_image(**config), bundle / "rootfs", rootless=rootless))


def test_runc_runs_the_converted_config(bundle: Path, tmp_path: Path) -> None:
    _prepare(bundle, Cmd=["echo", "hi"])
    assert _run(_runtime("runc", tmp_path), bundle) == "hi\n"


def test_crun_runs_the_converted_config(bundle: Path, tmp_path: Path) -> None:
    _prepare(bundle, Cmd=["echo", "hi"])
    assert _run(_without_hybrid_cgroups(_runtime("crun", tmp_path)), bundle) == "hi\n"


def test_runc_runs_as_the_image_user(bundle: Path, tmp_path: Path) -> None:
    _prepare(bundle, Entrypoint=["id"], User="app", WorkingDir="/tmp")
    out = _run(_runtime("runc", tmp_path), bundle)
    assert out.startswith("uid=1000(app) gid=1000(app) groups=")
    assert {"29(audio)", "44(video)", "50(staff)"} <= set(out.split("groups=")[1].strip()
                                                          .split(","))


def test_runc_runs_the_rootless_config(bundle: Path, tmp_path: Path) -> None:
    _prepare(bundle, rootless=True, Cmd=["sh", "-c", "echo hi; cat /proc/self/uid_map"])
    out = _run(_runtime("runc", tmp_path), bundle)
    assert out.split() == ["hi", "0", str(os.geteuid()), "1"]
