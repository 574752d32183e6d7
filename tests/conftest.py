"""Shared fixtures: real registries seeded with test images, and an ocitool CLI runner.

The registries are session-scoped because starting distribution and pushing busybox
takes a moment; tests must treat their content as read-only (push to new repositories
if a test needs to change something).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import images
from support.push import push_image
from support.registry import RegistryServer, TokenServer

CLEARED_ENV = ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "OCITOOL_CONFIG", "OCITOOL_ROOT",
               "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "DOCKER_CONFIG")


def _seed(server: RegistryServer, content: dict[str, images.Image | images.Index],
          creds: tuple[str, str] | None = None) -> None:
    """Push each "repo:tag" -> image and remember it in ``server.images``."""
    for ref, image in content.items():
        repository, tag = ref.rsplit(":", 1)
        push_image(server.url, repository, tag, image, creds=creds)
        server.images[ref] = image


@pytest.fixture(scope="session")
def registry() -> Iterator[RegistryServer]:
    """An open registry with busybox, whiteout, zstd, multi-platform and Docker-typed images."""
    busybox = images.busybox_image()
    with RegistryServer() as server:
        _seed(server, {
            "library/busybox:latest": busybox,
            "library/busybox:1.36": busybox,
            "test/whiteouts:latest": images.whiteout_image(),
            "test/zstd:latest": images.zstd_image(),
            "test/multi:latest": images.two_platform_index(),
            "test/docker-busybox:latest": images.busybox_image(docker_media_types=True),
        })
        yield server


@pytest.fixture(scope="session")
def token_registry() -> Iterator[RegistryServer]:
    """A token-auth registry (user alice/wonderland) with public/ and private/ busybox.

    The TokenServer is ``token_registry.token_server``; anonymous clients may pull
    ``public/*`` only.
    """
    with TokenServer(users={"alice": "wonderland"}) as tokens, \
            RegistryServer(auth=("token", tokens)) as server:
        busybox = images.busybox_image()
        _seed(server, {"public/busybox:latest": busybox, "private/busybox:latest": busybox},
              creds=("alice", "wonderland"))
        yield server


@pytest.fixture(scope="session")
def basic_registry() -> Iterator[RegistryServer]:
    """An htpasswd registry (user bob/builder, realm "test") with library/busybox:latest."""
    with RegistryServer(auth=("htpasswd", {"bob": "builder"})) as server:
        _seed(server, {"library/busybox:latest": images.busybox_image()}, creds=("bob", "builder"))
        yield server


class OcitoolRunner:
    """Run ``python -m ocitool --root <tmp>/root [--config <file>] ...`` in isolation.

    HOME is a private directory and the variables that could point ocitool at the
    user's real state (``CLEARED_ENV``) are removed, so only what a test sets applies.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "root"
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.cwd = tmp_path
        self.config_path: Path | None = None

    def write_config(self, toml_text: str) -> Path:
        """Write a config file and pass it with ``--config`` on every later call."""
        self.config_path = self.cwd / "ocitool-config.toml"
        self.config_path.write_text(toml_text)
        return self.config_path

    def environment(self, extra: dict[str, str | None] | None = None) -> dict[str, str]:
        """The child environment; ``extra`` values override, and None removes a variable."""
        env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
        env["HOME"] = str(self.home)
        for key, value in (extra or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def __call__(self, *args: str, check: bool = True, env: dict[str, str | None] | None = None,
                 input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ocitool with ``args``; with ``check``, a non-zero exit fails showing its output."""
        config = ["--config", str(self.config_path)] if self.config_path else []
        cmd = [sys.executable, "-m", "ocitool", "--root", str(self.root), *config, *map(str, args)]
        result = subprocess.run(cmd, env=self.environment(env), input=input, timeout=timeout,
                                cwd=self.cwd, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}\n"
                                 f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}")
        return result


@pytest.fixture
def ocitool(tmp_path: Path) -> OcitoolRunner:
    """A callable running the ocitool CLI against a fresh state root (``ocitool.root``)."""
    return OcitoolRunner(tmp_path)


@pytest.fixture(scope="session")
def tls_registry() -> Iterator[RegistryServer]:
    """An HTTPS registry with a self-signed certificate (``tls_registry.ca_path``) and busybox."""
    with RegistryServer(tls=True) as server:
        busybox = images.busybox_image()
        push_image(server.url, "library/busybox", "latest", busybox, verify=str(server.ca_path))
        server.images["library/busybox:latest"] = busybox
        yield server


UNPRIVILEGED_USER = "ocitool-test-user"


@pytest.fixture(scope="session")
def unprivileged_user() -> tuple[int, int]:
    """(uid, gid) of an unprivileged system user for the rootless tests, created when missing."""
    import pwd
    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", UNPRIVILEGED_USER], check=True)
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    return entry.pw_uid, entry.pw_gid


@pytest.fixture
def user_dir(unprivileged_user) -> Iterator[Path]:
    """A directory the unprivileged user owns (pytest's tmp_path is root-only)."""
    import shutil
    import tempfile
    path = Path(tempfile.mkdtemp(prefix="ocitool-user-"))
    path.chmod(0o755)
    os.chown(path, *unprivileged_user)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_user(user: tuple[int, int], command: list[str], home: Path) -> list[str]:
    """``command`` run as ``user`` with a clean environment of its own (via setpriv).

    The user cannot read root's home, where the test interpreter may live, so Python is
    Debian's own (the same minor version), with ocitool and the venv's packages on its path.
    """
    import site
    repo = Path(__file__).resolve().parent.parent
    pythonpath = ":".join([str(repo), *site.getsitepackages()])
    return ["setpriv", f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups", "--reset-env",
            "env", f"HOME={home}", f"XDG_RUNTIME_DIR={home}/run", f"PATH={os.environ['PATH']}",
            f"PYTHONPATH={pythonpath}", "PYTHONDONTWRITEBYTECODE=1", *command]


def user_python() -> str:
    """An interpreter any user may run, of this interpreter's minor version."""
    candidate = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if not os.access(candidate, os.X_OK):
        raise RuntimeError(f"{candidate} is missing: the rootless tests need Debian's python3 package")
    return candidate
