"""ocitool.securepath: paths resolved inside a root, by the kernel and by the fallback walk.

Every test runs twice: with ``openat2(RESOLVE_IN_ROOT)`` and with the userspace walk used
on kernels without it. Bait files live outside the root; a snapshot of the whole
temporary directory proves that nothing outside the root was created or changed.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocitool import securepath
from ocitool.securepath import open_in_root, open_parent_in_root, path_in_root
from support.hostile import snapshot

DIR_FLAGS = os.O_PATH | os.O_DIRECTORY


@pytest.fixture(params=["openat2", "userspace"])
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which resolver the test exercises."""
    if request.param == "openat2":
        if not securepath.openat2_available():
            pytest.skip("this kernel has no openat2")
    else:
        monkeypatch.setattr(securepath, "openat2_available", lambda: False)
    return request.param


class Sandbox:
    """``tmp/root`` (the root) next to ``tmp/outside`` (bait), with a snapshot of the outside."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.root = tmp / "root"
        self.outside = tmp / "outside"
        for directory in (self.root / "usr/lib", self.root / "etc", self.outside / "etc"):
            directory.mkdir(parents=True)
        (self.root / "etc/passwd").write_text("inside\n")
        (self.root / "usr/lib/libc.so").write_text("libc inside\n")
        (self.outside / "etc/passwd").write_text("OUTSIDE\n")
        self.fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        self.before = snapshot(tmp, skip=self.root)

    def link(self, name: str, target: str) -> None:
        """Make the symlink ``root/name -> target``."""
        os.symlink(target, self.root / name)

    def read(self, path: str) -> str:
        """The content of ``path`` opened through :func:`open_in_root`."""
        fd = open_in_root(self.fd, path, os.O_RDONLY)
        with os.fdopen(fd) as handle:
            return handle.read()

    def where(self, fd: int) -> str:
        """``path_in_root`` of ``fd``, closing it."""
        try:
            return path_in_root(self.fd, fd)
        finally:
            os.close(fd)

    def assert_outside_untouched(self) -> None:
        assert snapshot(self.tmp, skip=self.root) == self.before


@pytest.fixture
def box(tmp_path: Path, impl: str) -> Iterator[Sandbox]:
    sandbox = Sandbox(tmp_path)
    yield sandbox
    sandbox.assert_outside_untouched()
    os.close(sandbox.fd)


def test_kernel_has_openat2() -> None:
    assert securepath.openat2_available()  # Linux >= 5.6; the fallback is tested anyway


def test_plain_paths(box: Sandbox) -> None:
    assert box.read("etc/passwd") == "inside\n"
    assert box.read("/etc/passwd") == "inside\n"
    assert box.read("./etc//passwd") == "inside\n"
    assert box.where(open_in_root(box.fd, "", DIR_FLAGS)) == ""
    assert box.where(open_in_root(box.fd, "usr/lib", DIR_FLAGS)) == "usr/lib"


@pytest.mark.parametrize("target", ["/usr/lib", "usr/lib", "../usr/lib", "/../../usr/./lib", "../../../../usr/lib"])
def test_symlinks_resolve_as_if_root_were_slash(box: Sandbox, target: str) -> None:
    box.link("lib", target)
    assert box.read("lib/libc.so") == "libc inside\n"
    assert box.where(open_in_root(box.fd, "lib", DIR_FLAGS)) == "usr/lib"


@pytest.mark.parametrize("target", ["/", "..", "../../..", "/../..", "../../../../../../../.."])
def test_symlinks_cannot_climb_out(box: Sandbox, target: str) -> None:
    box.link("up", target)
    assert box.read("up/etc/passwd") == "inside\n"
    assert box.read("up/up/up/etc/passwd") == "inside\n"


def test_absolute_symlink_to_host_path_stays_inside(box: Sandbox) -> None:
    box.link("evil", str(box.outside))
    with pytest.raises(FileNotFoundError):
        box.read("evil/etc/passwd")


def test_dotdot_is_clamped_at_the_root(box: Sandbox) -> None:
    assert box.read("../../../etc/passwd") == "inside\n"
    assert box.read("usr/../../../etc/passwd") == "inside\n"
    assert box.where(open_in_root(box.fd, "../..", DIR_FLAGS)) == ""


def test_dotdot_after_a_symlink_uses_the_target(box: Sandbox) -> None:
    box.link("lib", "usr/lib")
    # "lib/.." is the parent of usr/lib, i.e. usr, as in the kernel: not the lexical "."
    assert box.where(open_in_root(box.fd, "lib/..", DIR_FLAGS)) == "usr"


def test_symlink_loop_is_eloop(box: Sandbox) -> None:
    box.link("a", "b")
    box.link("b", "/a")
    with pytest.raises(OSError) as caught:
        box.read("a/etc/passwd")
    assert caught.value.errno == errno.ELOOP


def test_nofollow_applies_to_the_last_component(box: Sandbox) -> None:
    box.link("pw", "/etc/passwd")
    with pytest.raises(OSError) as caught:
        open_in_root(box.fd, "pw", os.O_RDONLY | os.O_NOFOLLOW)
    assert caught.value.errno == errno.ELOOP
    fd = open_in_root(box.fd, "pw", os.O_PATH | os.O_NOFOLLOW)
    try:
        assert stat.S_ISLNK(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    assert box.read("pw") == "inside\n"


def test_create_through_symlink_lands_inside(box: Sandbox) -> None:
    box.link("evil", str(box.outside / "etc"))
    (box.root / str(box.outside).lstrip("/")).mkdir(parents=True)
    (box.root / str(box.outside / "etc").lstrip("/")).mkdir()
    fd = open_in_root(box.fd, "evil/passwd", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"written\n")
    os.close(fd)
    assert (box.root / str(box.outside / "etc/passwd").lstrip("/")).read_text() == "written\n"


def test_missing_path_is_enoent(box: Sandbox) -> None:
    with pytest.raises(FileNotFoundError):
        box.read("nope/file")
    with pytest.raises(NotADirectoryError):
        box.read("etc/passwd/x")


def test_parent_of_an_entry_does_not_follow_the_entry(box: Sandbox) -> None:
    box.link("lib", "/usr/lib")
    box.link("escape", str(box.outside / "etc/passwd"))
    fd, name = open_parent_in_root(box.fd, "lib/../escape")
    assert name == "escape" and box.where(os.dup(fd)) == "usr"
    os.close(fd)
    fd, name = open_parent_in_root(box.fd, "/escape")
    try:
        assert name == "escape" and box.where(os.dup(fd)) == ""
        assert os.readlink(name, dir_fd=fd) == str(box.outside / "etc/passwd")
        os.unlink(name, dir_fd=fd)  # acts on the link itself
    finally:
        os.close(fd)
    assert not (box.root / "escape").is_symlink()


def test_parent_through_symlinked_directories(box: Sandbox) -> None:
    box.link("lib", "/usr/lib")
    fd, name = open_parent_in_root(box.fd, "lib/libc.so")
    assert (name, box.where(fd)) == ("libc.so", "usr/lib")


@pytest.mark.parametrize("path", ["", ".", "/", "a/..", ".."])
def test_parent_needs_an_entry_name(box: Sandbox, path: str) -> None:
    with pytest.raises(ValueError):
        open_parent_in_root(box.fd, path)


def test_parent_missing_without_create(box: Sandbox) -> None:
    with pytest.raises(FileNotFoundError):
        open_parent_in_root(box.fd, "no/such/dir/file")


def test_create_missing_dirs(box: Sandbox) -> None:
    fd, name = open_parent_in_root(box.fd, "new/deeper/still/file", create_missing_dirs=True)
    assert (name, box.where(fd)) == ("file", "new/deeper/still")
    assert oct((box.root / "new/deeper").stat().st_mode & 0o777) == oct(0o755 & ~_umask())


def test_create_missing_dirs_through_symlinks_stays_inside(box: Sandbox) -> None:
    box.link("evil", str(box.outside))
    box.link("up", "../../..")
    fd, _ = open_parent_in_root(box.fd, "evil/made/file", create_missing_dirs=True)
    assert box.where(fd) == str(box.outside).lstrip("/") + "/made"
    fd, _ = open_parent_in_root(box.fd, "up/up/made2/file", create_missing_dirs=True)
    assert box.where(fd) == "made2"
    assert (box.root / "made2").is_dir()


def test_create_missing_dirs_over_a_file_fails(box: Sandbox) -> None:
    with pytest.raises(NotADirectoryError):
        open_parent_in_root(box.fd, "etc/passwd/sub/file", create_missing_dirs=True)


@pytest.mark.parametrize("target", ["/nowhere/deep", "nowhere/deep", "../../nowhere/deep"])
def test_create_missing_dirs_follows_a_dangling_symlink_inside(box: Sandbox, target: str) -> None:
    box.link("dangling", target)
    fd, name = open_parent_in_root(box.fd, "dangling/sub/file", create_missing_dirs=True)
    assert (name, box.where(fd)) == ("file", "nowhere/deep/sub")


def test_create_missing_dirs_symlink_loop(box: Sandbox) -> None:
    box.link("a", "b/x")
    box.link("b", "a/y")
    with pytest.raises(OSError) as caught:
        open_parent_in_root(box.fd, "a/sub/file", create_missing_dirs=True)
    assert caught.value.errno == errno.ELOOP


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting procfs needs root")
def test_magic_links_do_not_escape(box: Sandbox) -> None:
    """A procfs inside the root: /proc/self/root leads to the host's / via a magic link."""
    proc = box.root / "proc"
    proc.mkdir()
    subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
    try:
        box.link("hostroot", "/proc/self/root")
        for path in ("proc/self/root/etc/passwd", "hostroot/etc/passwd", "proc/1/cwd/etc/passwd"):
            try:
                content = box.read(path)
            except OSError as exc:
                assert exc.errno in (errno.ELOOP, errno.ENOENT, errno.EXDEV, errno.EACCES)
            else:
                assert content == "inside\n"  # the fallback reads the link's text as a path inside
    finally:
        subprocess.run(["umount", str(proc)], check=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
