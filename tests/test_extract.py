"""Applying layers onto a rootfs: ocitool.bundle.extract, .layers and .mtree.

* entry types and their attributes, as the kernel reports them afterwards;
* blobs and their digests: media types, compression, truncation, oversize, not a tar;
* whiteouts (plain and opaque, whatever the tar order) and type replacement;
* hostile layers: every one refused with a clear LayerError or contained in the rootfs,
  with a snapshot proving nothing outside the rootfs was created, changed or removed;
* rootless unpacking, in a child process running as an unprivileged test user;
* the mtree manifest against the one ``umoci unpack`` writes for the same image.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import logging
import os
import pwd
import random
import re
import resource
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from ocitool import securepath
from ocitool.bundle.extract import MAX_DEPTH, apply_layers, rootless_xattr
from ocitool.bundle.layers import LayerSource
from ocitool.bundle.mtree import Mtree, vis
from ocitool.errors import DigestMismatchError, LayerError
from support import images
from support.hostile import Raw, raw_tar, snapshot
from support.images import Dir, File, Hardlink, Symlink, compress, opaque, tar_layer, whiteout

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
SUFFIX = {"none": "", "gzip": "+gzip", "zstd": "+zstd"}
DIR, SYM, LNK = tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
CHR, BLK, FIFO = tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE
# vfs_cap_data revision 2, effective, permitted = CAP_NET_RAW (13): what `setcap cap_net_raw+ep` writes.
CAP_NET_RAW = b"\x01\x00\x00\x02\x00\x20\x00\x00" + bytes(12)
TEST_USER = "ocitool-test-user"


def pax_bytes(value: bytes) -> str:
    """A PAX record value carrying arbitrary bytes (tarfile writes them back verbatim)."""
    return value.decode("utf-8", "surrogateescape")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(tar: bytes, compression: str = "none", *, media_type: str | None = None, size: int | None = None,
          digest: str | None = None, diff_id: str | None = None, blob: bytes | None = None) -> LayerSource:
    """A LayerSource over an in-memory blob; everything is consistent unless overridden."""
    data = compress(tar, compression) if blob is None else blob  # type: ignore[arg-type]
    return LayerSource(open_blob=lambda: io.BytesIO(data), media_type=media_type or OCI_LAYER + SUFFIX[compression],
                       digest=digest or sha256(data), size=len(data) if size is None else size,
                       diff_id=diff_id or sha256(tar))


def image_sources(image: images.Image) -> list[LayerSource]:
    """The layers of a built image, as apply_layers takes them."""
    diff_ids = json.loads(image.config.data)["rootfs"]["diff_ids"]
    return [LayerSource(lambda b=blob: io.BytesIO(b.data), blob.media_type, blob.digest, blob.size, diff_id)
            for blob, diff_id in zip(image.layers, diff_ids)]


def extract(rootfs: Path, *tars: bytes, rootless: bool = False) -> Mtree:
    return apply_layers(rootfs, [layer(tar) for tar in tars], rootless=rootless)


def kind(path: Path) -> str:
    mode = os.lstat(path).st_mode
    return {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "link", stat.S_IFCHR: "char",
            stat.S_IFBLK: "block", stat.S_IFIFO: "fifo"}[stat.S_IFMT(mode)]


def listing(rootfs: Path) -> set[str]:
    """Every path below ``rootfs``, relative."""
    return {str(Path(d, n).relative_to(rootfs)) for d, dirs, files in os.walk(rootfs) for n in dirs + files}


# -- entry types and attributes ------------------------------------------------

EVERYTHING = [
    Raw("etc", DIR, mode=0o755),
    Raw("etc/data", data=b"hello\n", mode=0o640, uid=1000, gid=1001, mtime=1_600_000_000),
    Raw("etc/suid", data=b"#!/bin/sh\n", mode=0o4755, uid=1000, gid=1000),
    Raw("etc/sgid", data=b"x", mode=0o2711, gid=50),
    Raw("etc/empty", mode=0o600),
    Raw("etc/link", SYM, linkname="data", uid=1000, gid=1001, mtime=1_500_000_000),
    Raw("etc/dangling", SYM, linkname="/no/such/target"),
    Raw("etc/hard", LNK, linkname="etc/data"),
    Raw("shared", DIR, mode=0o2775, uid=1000, gid=1001, mtime=1_400_000_000),
    Raw("tmp", DIR, mode=0o1777),
    Raw("dev", DIR, mode=0o755),
    Raw("dev/null", CHR, mode=0o666, devmajor=1, devminor=3),
    Raw("dev/loop7", BLK, mode=0o660, gid=6, devmajor=7, devminor=7),
    Raw("dev/fifo", FIFO, mode=0o620),
    Raw("bin", DIR, mode=0o755),
    Raw("bin/ping", data=b"\x7fELF", mode=0o4755, pax={"SCHILY.xattr.security.capability": pax_bytes(CAP_NET_RAW),
                                                       "SCHILY.xattr.user.note": "pings"}),
    Raw("bin/binary-xattr", data=b"b", pax={"SCHILY.xattr.user.raw": pax_bytes(b"\xff\xfe\x00\x01")}),
    Raw("d" * 99, DIR),
    Raw("d" * 99 + "/" + "f" * 150, data=b"long name\n"),
    Raw("long-target", SYM, linkname="t" * 300),
    Raw("ro", DIR, mode=0o555),
    Raw("ro/inside", data=b"written into a read-only directory\n", mode=0o444),
]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_every_entry_type_and_attribute(tmp_path: Path, fmt: int) -> None:
    rootfs = tmp_path / "rootfs"
    members = EVERYTHING if fmt == tarfile.PAX_FORMAT else [m for m in EVERYTHING if not m.pax]
    extract(rootfs, raw_tar(members, format=fmt))

    data = os.lstat(rootfs / "etc/data")
    assert (rootfs / "etc/data").read_bytes() == b"hello\n"
    assert (stat.S_IMODE(data.st_mode), data.st_uid, data.st_gid, data.st_mtime) == (0o640, 1000, 1001, 1_600_000_000)
    assert data.st_nlink == 2 and os.lstat(rootfs / "etc/hard").st_ino == data.st_ino
    suid = os.lstat(rootfs / "etc/suid")  # set after chown, which clears it
    assert (stat.S_IMODE(suid.st_mode), suid.st_uid) == (0o4755, 1000)
    assert stat.S_IMODE(os.lstat(rootfs / "etc/sgid").st_mode) == 0o2711
    assert (rootfs / "etc/empty").read_bytes() == b""
    link = os.lstat(rootfs / "etc/link")
    assert os.readlink(rootfs / "etc/link") == "data"
    assert (link.st_uid, link.st_gid, link.st_mtime) == (1000, 1001, 1_500_000_000)
    assert os.readlink(rootfs / "etc/dangling") == "/no/such/target"
    shared = os.lstat(rootfs / "shared")
    assert (stat.S_IMODE(shared.st_mode), shared.st_uid, shared.st_gid) == (0o2775, 1000, 1001)
    assert shared.st_mtime == 1_400_000_000
    assert stat.S_IMODE(os.lstat(rootfs / "tmp").st_mode) == 0o1777
    null = os.lstat(rootfs / "dev/null")
    assert (kind(rootfs / "dev/null"), os.major(null.st_rdev), os.minor(null.st_rdev)) == ("char", 1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
    loop = os.lstat(rootfs / "dev/loop7")
    assert (kind(rootfs / "dev/loop7"), loop.st_rdev, loop.st_gid) == ("block", os.makedev(7, 7), 6)
    assert (kind(rootfs / "dev/fifo"), stat.S_IMODE(os.lstat(rootfs / "dev/fifo").st_mode)) == ("fifo", 0o620)
    assert (rootfs / ("d" * 99) / ("f" * 150)).read_bytes() == b"long name\n"
    assert os.readlink(rootfs / "long-target") == "t" * 300
    assert (rootfs / "ro/inside").read_bytes().startswith(b"written")
    assert stat.S_IMODE(os.lstat(rootfs / "ro").st_mode) == 0o555
    if fmt == tarfile.PAX_FORMAT:
        ping = rootfs / "bin/ping"
        assert os.getxattr(ping, "security.capability") == CAP_NET_RAW  # set after chown, which clears it
        assert os.getxattr(ping, "user.note") == b"pings"
        assert stat.S_IMODE(os.lstat(ping).st_mode) == 0o4755
        assert os.getxattr(rootfs / "bin/binary-xattr", "user.raw") == b"\xff\xfe\x00\x01"


def test_directory_mtimes_survive_their_content(tmp_path: Path) -> None:
    tar = raw_tar([Raw("a", DIR, mtime=1_000_000_000), Raw("a/b", DIR, mtime=1_100_000_000),
                   Raw("a/b/f", data=b"x"), Raw("a/g", data=b"y"), Raw("a/b/c/implicit", data=b"z")])
    extract(tmp_path / "rootfs", tar, raw_tar([Raw("a/late", data=b"from the next layer")]))
    assert os.lstat(tmp_path / "rootfs/a").st_mtime == 1_000_000_000
    assert os.lstat(tmp_path / "rootfs/a/b").st_mtime == 1_100_000_000
    assert os.lstat(tmp_path / "rootfs").st_mtime == 0  # like umoci: the root starts at the epoch


def test_implicit_parent_directories(tmp_path: Path) -> None:
    mtree = extract(tmp_path / "rootfs", raw_tar([Raw("x/y/z/file", data=b"deep")]))
    for directory in ("x", "x/y", "x/y/z"):
        info = os.lstat(tmp_path / "rootfs" / directory)
        assert (kind(tmp_path / "rootfs" / directory), stat.S_IMODE(info.st_mode), info.st_uid) == ("dir", 0o755, 0)
        recorded = mtree.lookup(directory)
        assert recorded is not None and recorded.mtime_ns // 10**9 == info.st_mtime // 1
    assert (tmp_path / "rootfs/x/y/z/file").read_bytes() == b"deep"


def test_rootfs_must_be_empty(tmp_path: Path) -> None:
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "rootfs/stray").touch()
    with pytest.raises(LayerError, match="not empty"):
        extract(tmp_path / "rootfs", tar_layer([File("a")]))


def test_many_directories_and_deep_nesting(tmp_path: Path) -> None:
    """More parent directories than the fd cache holds, and a tree as deep as allowed."""
    wide = [Raw(f"wide/{i:04d}/file", data=str(i).encode()) for i in range(700)]
    deep = "/".join(["n"] * (MAX_DEPTH - 1))
    mtree = extract(tmp_path / "rootfs", raw_tar(wide + [Raw(f"{deep}/bottom", data=b"bottom")]),
                    raw_tar([Raw(".wh.n")]))
    assert (tmp_path / "rootfs/wide/0699/file").read_bytes() == b"699"
    assert mtree.lookup("n") is None and not (tmp_path / "rootfs/n").exists()


# -- blobs: media types, compression, digests ------------------------------------

BASIC = tar_layer([Dir("etc"), File("etc/hostname", b"box\n"), Symlink("etc/alias", "hostname")])


@pytest.mark.parametrize("compression,media_type", [
    ("none", OCI_LAYER), ("gzip", OCI_LAYER + "+gzip"), ("zstd", OCI_LAYER + "+zstd"),
    ("gzip", DOCKER_GZIP), ("none", "application/vnd.oci.image.layer.nondistributable.v1.tar"),
    ("gzip", "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"),
    ("zstd", "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"),
])
def test_media_types(tmp_path: Path, compression: str, media_type: str) -> None:
    apply_layers(tmp_path / "rootfs", [layer(BASIC, compression, media_type=media_type)], rootless=False)
    assert (tmp_path / "rootfs/etc/hostname").read_bytes() == b"box\n"


def test_multi_member_gzip_multi_frame_zstd_and_padding(tmp_path: Path) -> None:
    first, second = BASIC[:2048], BASIC[2048:]
    gzip_blob = compress(first, "gzip") + compress(second, "gzip") + bytes(4096)
    zstd_blob = zstandard.ZstdCompressor().compress(first) + zstandard.ZstdCompressor().compress(second)
    for name, blob, compression in (("g", gzip_blob, "gzip"), ("z", zstd_blob, "zstd")):
        apply_layers(tmp_path / name, [layer(BASIC, compression, blob=blob)], rootless=False)
        assert (tmp_path / name / "etc/hostname").read_bytes() == b"box\n"


def test_unsupported_media_type(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="unsupported layer media type 'application/vnd.example.weird'"):
        apply_layers(tmp_path / "rootfs", [layer(BASIC, media_type="application/vnd.example.weird")],
                     rootless=False)


def test_diff_id_mismatch(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="does not match the diff_id"):
        apply_layers(tmp_path / "rootfs", [layer(BASIC, "gzip", diff_id=sha256(b"other"))], rootless=False)


def test_blob_digest_mismatch(tmp_path: Path) -> None:
    with pytest.raises(DigestMismatchError, match="does not match its digest"):
        apply_layers(tmp_path / "rootfs", [layer(BASIC, "gzip", digest=sha256(b"other"))], rootless=False)


def test_trailing_garbage_after_gzip_is_refused(tmp_path: Path) -> None:
    blob = compress(BASIC, "gzip") + b"garbage"
    with pytest.raises(LayerError, match="corrupt or truncated gzip"):
        apply_layers(tmp_path / "rootfs", [layer(BASIC, "gzip", blob=blob)], rootless=False)


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_sparse_files(tmp_path: Path, fmt: str) -> None:
    """GNU tar's sparse formats (old GNU headers, PAX GNU.sparse 1.0) come out as the full file."""
    source = tmp_path / "sparse"
    with open(source, "wb") as handle:
        handle.truncate(3 << 20)
        handle.seek(1 << 20)
        handle.write(b"data in the middle")
        handle.seek((3 << 20) - 3)
        handle.write(b"end")
    (tmp_path / "after").write_bytes(b"the entry after it")
    tar = subprocess.run(["tar", "--sparse", f"--format={fmt}", "-cf", "-", "-C", str(tmp_path), "sparse", "after"],
                         check=True, capture_output=True).stdout
    mtree = extract(tmp_path / "rootfs", tar)
    assert (tmp_path / "rootfs/sparse").read_bytes() == source.read_bytes()
    assert (tmp_path / "rootfs/after").read_bytes() == b"the entry after it"
    recorded = mtree.lookup("sparse")
    assert recorded is not None and recorded.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()


def test_fast_header_decoder_agrees_with_tarfile() -> None:
    """The fast path of the header decoder gives what tarfile.TarInfo.frombuf gives, on
    ordinary headers and on thousands of corrupted ones."""
    from ocitool.bundle.layers import _TarInfo
    formats = (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT)
    samples = [raw_tar([member], format=fmt)[:512] for member in EVERYTHING[:12] for fmt in formats]
    samples.append(raw_tar([Raw("big-ids", uid=1 << 40, gid=3)], format=tarfile.GNU_FORMAT)[:512])  # base-256
    samples.append(raw_tar([Raw("v7-dir/", tarfile.AREGTYPE)], format=tarfile.USTAR_FORMAT)[:512])
    rng = random.Random(7)
    for _ in range(3000):
        sample = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 4)):
            sample[rng.randrange(512)] = rng.choice([0, 0x20, 0x30, 0x37, 0x38, 0x80, 0xFF, rng.randrange(256)])
        if rng.random() < 0.8:  # mostly keep the checksum right, so that the fields get decoded
            sample[148:156] = b"%06o\0 " % (256 + sum(sample) - sum(sample[148:156]))
        samples.append(bytes(sample))
    for buf in samples:
        assert _decoded(_TarInfo, buf) == _decoded(tarfile.TarInfo, buf)


def _decoded(cls: type[tarfile.TarInfo], buf: bytes) -> object:
    try:
        info = cls.frombuf(buf, "utf-8", "surrogateescape")
    except tarfile.HeaderError as exc:
        return type(exc)
    return {name: getattr(info, name, None) for name in tarfile.TarInfo.__slots__ if name != "tarfile"}


# -- whiteouts and replacement -----------------------------------------------------


def test_whiteout_image(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    apply_layers(rootfs, image_sources(images.whiteout_image()), rootless=False)
    assert listing(rootfs) == {"a", "a/file2", "dir", "dir/x", "dir/x/y", "replace-me", "opq", "opq/new"}
    assert (rootfs / "replace-me").read_bytes() == b"now a file\n"


def test_opaque_keeps_this_layers_entries_in_any_order(tmp_path: Path) -> None:
    lower = tar_layer([Dir("o"), File("o/old"), Dir("o/sub"), File("o/sub/old"), File("o/kept-name", b"lower")])
    upper = tar_layer([File("o/before", b"before"), Dir("o/sub"), File("o/sub/new"), opaque("o"),
                       File("o/after", b"after"), File("o/kept-name", b"upper")])
    mtree = extract(tmp_path / "rootfs", lower, upper)
    assert listing(tmp_path / "rootfs") == {"o", "o/before", "o/sub", "o/sub/new", "o/after", "o/kept-name"}
    assert (tmp_path / "rootfs/o/kept-name").read_bytes() == b"upper"
    assert mtree.lookup("o/old") is None and mtree.lookup("o/sub/old") is None


def test_whiteouts(tmp_path: Path) -> None:
    lower = tar_layer([Dir("tree"), Dir("tree/sub"), File("tree/sub/f"), File("file"), Symlink("link", "/tree"),
                       Dir("keep"), File("keep/f")])
    upper = tar_layer([whiteout("tree"), whiteout("file"), whiteout("link"), whiteout("missing"),
                       whiteout("no/such/parent"), Dir("keep"), File("keep/new"), whiteout("keep/new")])
    mtree = extract(tmp_path / "rootfs", lower, upper)
    # a whiteout only hides lower layers: keep/new, made by the same layer, stays
    assert listing(tmp_path / "rootfs") == {"keep", "keep/f", "keep/new"}
    assert "wh." not in mtree.render()


def test_whiteout_of_a_tree_spares_what_the_layer_made_in_it(tmp_path: Path) -> None:
    lower = tar_layer([Dir("t"), File("t/old"), Dir("t/d"), File("t/d/old")])
    upper = tar_layer([File("t/d/new"), whiteout("t")])
    extract(tmp_path / "rootfs", lower, upper)
    assert listing(tmp_path / "rootfs") == {"t", "t/d", "t/d/new"}


def test_type_replacement(tmp_path: Path) -> None:
    lower = tar_layer([Dir("dir2file"), File("dir2file/inner"), File("file2dir", b"f"), Dir("dirkeep", mode=0o700),
                       File("dirkeep/f"), Dir("dir2link"), File("dir2link/x"), Symlink("link2dir", "/dir2file")])
    upper = tar_layer([File("dir2file", b"now a file"), Dir("file2dir", mode=0o711), File("file2dir/in"),
                       Dir("dirkeep", mode=0o750, uid=5), Symlink("dir2link", "dirkeep"), Dir("link2dir")])
    mtree = extract(tmp_path / "rootfs", lower, upper)
    root = tmp_path / "rootfs"
    assert (root / "dir2file").read_bytes() == b"now a file"
    assert kind(root / "file2dir") == "dir" and stat.S_IMODE(os.lstat(root / "file2dir").st_mode) == 0o711
    assert (root / "dirkeep/f").exists()  # a directory over a directory keeps its content...
    info = os.lstat(root / "dirkeep")
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o750, 5)  # ...and takes the new metadata
    assert kind(root / "dir2link") == "link" and (root / "dir2link/f").exists()
    assert kind(root / "link2dir") == "dir" and kind(root / "dir2file") == "file"
    assert mtree.lookup("dir2file/inner") is None and mtree.lookup("dir2link/x") is None


def test_hardlinks_across_layers_and_link_counts(tmp_path: Path) -> None:
    lower = tar_layer([File("a", b"shared"), Hardlink("b", "a")])
    upper = tar_layer([Hardlink("c", "a"), File("b", b"replaced"), Hardlink("a", "a")])
    mtree = extract(tmp_path / "rootfs", lower, upper)
    root = tmp_path / "rootfs"
    assert os.lstat(root / "a").st_ino == os.lstat(root / "c").st_ino and os.lstat(root / "a").st_nlink == 2
    assert (root / "b").read_bytes() == b"replaced" and os.lstat(root / "b").st_nlink == 1
    a, b = mtree.lookup("a"), mtree.lookup("b")
    assert a is not None and b is not None and (a.nlink, b.nlink) == (2, 1)


# -- hostile layers ---------------------------------------------------------------


class Box:
    """``tmp/rootfs`` beside ``tmp/outside`` (bait), with snapshots of everything but the rootfs."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.rootfs = tmp / "rootfs"
        self.outside = tmp / "outside"
        (self.outside / "dir").mkdir(parents=True)
        (self.outside / "bait").write_bytes(b"bait\n")
        (self.outside / "dir/inner").write_bytes(b"inner\n")
        os.setxattr(self.outside / "bait", "user.bait", b"1")
        self.rootfs.mkdir()
        self.before = snapshot(tmp, skip=self.rootfs)
        self.siblings = _siblings(tmp)

    def inside(self, host_path: Path | str) -> Path:
        """Where an absolute host path lands when the rootfs is taken as /."""
        return self.rootfs / str(host_path).lstrip("/")

    def apply(self, *tars: bytes) -> Mtree:
        return extract(self.rootfs, *tars)

    def assert_outside_untouched(self) -> None:
        assert snapshot(self.tmp, skip=self.rootfs) == self.before
        assert _siblings(self.tmp) == self.siblings


def _siblings(tmp: Path) -> tuple[list[str], int]:
    return sorted(os.listdir(tmp.parent)), os.lstat(tmp.parent).st_mtime_ns


@pytest.fixture(params=["openat2", "userspace"])
def box(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Box]:
    """A Box; every hostile case runs with the kernel's resolver and with the fallback walk."""
    if request.param == "userspace":
        monkeypatch.setattr(securepath, "openat2_available", lambda: False)
    sandbox = Box(tmp_path)
    yield sandbox
    sandbox.assert_outside_untouched()


REFUSED: dict[str, tuple[Callable[[Box], list[bytes]], str]] = {
    "dotdot": (lambda b: [raw_tar([Raw("../escape", data=b"x")])], "points outside the root"),
    "dotdot-after-dirs": (lambda b: [raw_tar([Raw("a/b/../../../escape", data=b"x")])], "points outside the root"),
    "absolute-dotdot": (lambda b: [raw_tar([Raw("/../../outside/bait", data=b"x")])], "points outside the root"),
    "pax-path-dotdot": (lambda b: [raw_tar([Raw("innocent", data=b"x", pax={"path": "../outside/bait"})])],
                        "points outside the root"),
    "gnu-longname-dotdot": (lambda b: [raw_tar([Raw("../" * 60 + "outside/bait", data=b"x")], tarfile.GNU_FORMAT)],
                            "points outside the root"),
    "symlink-named-dotdot": (lambda b: [raw_tar([Raw("../escape-link", SYM, linkname="/etc")])],
                             "points outside the root"),
    "hardlink-named-dotdot": (lambda b: [raw_tar([Raw("f", data=b"x"), Raw("../../escape", LNK, linkname="f")])],
                              "points outside the root"),
    "directory-named-dotdot": (lambda b: [raw_tar([Raw("a/../../escape", DIR)])], "points outside the root"),
    "nul-in-name": (lambda b: [raw_tar([Raw("x", data=b"x", pax={"path": "evil\x00name"})])], "NUL byte"),
    "hardlink-dotdot": (lambda b: [raw_tar([Raw("h", LNK, linkname="../outside/bait")])], "points outside the root"),
    "hardlink-to-host-path": (lambda b: [raw_tar([Raw("h", LNK, linkname=str(b.outside / "bait"))])],
                              "which does not exist in the root filesystem"),
    "hardlink-through-symlinked-dir": (lambda b: [raw_tar([Raw("sd", SYM, linkname=str(b.outside)),
                                                           Raw("h", LNK, linkname="sd/bait")])],
                                       "which does not exist in the root filesystem"),
    "hardlink-through-dotdot-symlink": (lambda b: [raw_tar([Raw("up", SYM, linkname="../../.."),
                                                            Raw("h", LNK, linkname="up/outside/bait")])],
                                        "which does not exist in the root filesystem"),
    "hardlink-to-directory": (lambda b: [raw_tar([Raw("d", DIR), Raw("h", LNK, linkname="d")])],
                              "points to the directory 'd'"),
    "hardlink-to-root": (lambda b: [raw_tar([Raw("h", LNK, linkname="/")])], "points to the directory '/'"),
    "whiteout-dot (CVE-2021-29136)": (lambda b: [raw_tar([Raw(".wh..")])], "does not name an entry"),
    "whiteout-dotdot": (lambda b: [raw_tar([Raw(".wh...")])], "does not name an entry"),
    "whiteout-dot-in-subdir": (lambda b: [raw_tar([Raw("a", DIR), Raw("a/.wh..")])], "does not name an entry"),
    "whiteout-empty-name": (lambda b: [raw_tar([Raw("a/.wh.")])], "does not name an entry"),
    "whiteout-climbing": (lambda b: [raw_tar([Raw("a/../../outside/.wh.bait")])], "points outside the root"),
    "dot-as-file": (lambda b: [raw_tar([Raw(".", data=b"x")])], "would replace the root directory"),
    "empty-name-file": (lambda b: [raw_tar([Raw("", data=b"x")])], "would replace the root directory"),
    "root-as-symlink": (lambda b: [raw_tar([Raw("./", SYM, linkname=str(b.outside))])],
                        "would replace the root directory"),
    "symlink-loop-parent": (lambda b: [raw_tar([Raw("a", SYM, linkname="b"), Raw("b", SYM, linkname="/a"),
                                                Raw("a/x", data=b"x")])], "Too many levels of symbolic links"),
    "unknown-entry-type": (lambda b: [raw_tar([Raw("v", b"Z")])], "unsupported tar entry type"),
    "not-a-tar": (lambda b: [b"this is not a tar archive at all" * 40], "not a valid tar archive"),
    "too-deep": (lambda b: [raw_tar([Raw("/".join(["n"] * (MAX_DEPTH + 1)), data=b"x")])], "nested more than"),
    "too-deep-through-symlink": (lambda b: [raw_tar([Raw("/".join(["n"] * 300), DIR),
                                                    Raw("s", SYM, linkname="/".join(["n"] * 300)),
                                                    Raw("s/" + "/".join(["m"] * 300), data=b"x")])],
                                 "nested more than"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_hostile_layer_is_refused(box: Box, case: str) -> None:
    build, message = REFUSED[case]
    with pytest.raises(LayerError, match=re.escape(message)):
        box.apply(*build(box))


def test_absolute_names_are_relative_to_the_rootfs(box: Box) -> None:
    box.apply(raw_tar([Raw("/etc/x", data=b"x"), Raw(str(box.outside / "bait"), data=b"pwned")]))
    assert (box.rootfs / "etc/x").read_bytes() == b"x"
    assert box.inside(box.outside / "bait").read_bytes() == b"pwned"


@pytest.mark.parametrize("target", ["outside", "/", "../../../../../../..", "/../.."])
def test_write_through_symlink_in_same_layer(box: Box, target: str) -> None:
    """CVE-2014-6407/9356 style: a symlink, then an entry written "through" it."""
    target = str(box.outside) if target == "outside" else target
    prefix = "" if target == str(box.outside) else str(box.outside).lstrip("/") + "/"
    box.apply(raw_tar([Raw("evil", SYM, linkname=target), Raw(f"evil/{prefix}bait", data=b"pwned"),
                       Raw(f"evil/{prefix}dir/new", data=b"new")]))
    assert box.inside(box.outside / "bait").read_bytes() == b"pwned"
    assert box.inside(box.outside / "dir/new").read_bytes() == b"new"
    assert os.readlink(box.rootfs / "evil") == target


def test_write_through_symlink_from_a_lower_layer(box: Box) -> None:
    box.apply(raw_tar([Raw("evil", SYM, linkname=str(box.outside))]),
              raw_tar([Raw("evil/bait", data=b"pwned"), Raw("evil/dir", DIR, mode=0o777),
                       Raw("evil/dir/inner", data=b"pwned")]))
    assert box.inside(box.outside / "dir/inner").read_bytes() == b"pwned"


def test_directory_entry_over_symlink_does_not_chmod_its_target(box: Box) -> None:
    """containerd CVE-2021-32760 style: metadata of a same-named entry applied through a symlink."""
    box.apply(raw_tar([Raw("evil", SYM, linkname=str(box.outside / "dir")),
                       Raw("evil", DIR, mode=0o777, uid=1234)]))
    assert kind(box.rootfs / "evil") == "dir" and stat.S_IMODE(os.lstat(box.rootfs / "evil").st_mode) == 0o777


def test_file_entry_over_symlink_replaces_the_link(box: Box) -> None:
    box.apply(raw_tar([Raw("evil", SYM, linkname=str(box.outside / "bait"))]),
              raw_tar([Raw("evil", data=b"pwned", mode=0o777)]))
    assert kind(box.rootfs / "evil") == "file" and (box.rootfs / "evil").read_bytes() == b"pwned"


def test_hardlink_to_a_symlink_links_the_symlink(box: Box) -> None:
    """The link gets the symlink's inode, never its target's; replacing the name later touches neither."""
    box.apply(raw_tar([Raw("s", SYM, linkname=str(box.outside / "bait")), Raw("h", LNK, linkname="s")]),
              raw_tar([Raw("h2", LNK, linkname="h"), Raw("s", data=b"pwned", mode=0o777)]))
    link = os.lstat(box.rootfs / "h")
    assert kind(box.rootfs / "h") == "link" and link.st_nlink == 2
    assert os.lstat(box.rootfs / "h2").st_ino == link.st_ino
    assert (box.rootfs / "s").read_bytes() == b"pwned"


def test_hardlink_created_through_symlinked_parent(box: Box) -> None:
    box.apply(raw_tar([Raw("f", data=b"x"), Raw("evil", SYM, linkname=str(box.outside)),
                       Raw("evil/bait", LNK, linkname="f")]))
    assert os.lstat(box.inside(box.outside / "bait")).st_ino == os.lstat(box.rootfs / "f").st_ino


def test_directory_swapped_for_symlink_within_a_layer(box: Box) -> None:
    """CVE-2018-15664 style: a directory already used (and cached) becomes a symlink out."""
    box.apply(raw_tar([Raw("d", DIR), Raw("d/x", data=b"x"), Raw("d", SYM, linkname=str(box.outside)),
                       Raw("d/y", data=b"pwned"), Raw("d/bait", data=b"pwned")]))
    assert box.inside(box.outside / "y").read_bytes() == b"pwned"
    assert box.inside(box.outside / "bait").read_bytes() == b"pwned"


@pytest.mark.parametrize("marker", ["l/.wh.bait", "l/.wh..wh..opq", "l/dir/.wh.inner", "l/.wh.dir"])
def test_whiteout_through_symlink_stays_inside(box: Box, marker: str) -> None:
    box.apply(raw_tar([Raw("l", SYM, linkname=str(box.outside))]), raw_tar([Raw(marker)]))
    assert os.readlink(box.rootfs / "l") == str(box.outside)


def test_dot_directory_entry_only_changes_the_root(box: Box) -> None:
    box.apply(raw_tar([Raw("./", DIR, mode=0o750, mtime=1_234_567_890), Raw("./f", data=b"x")]))
    info = os.lstat(box.rootfs)
    assert (stat.S_IMODE(info.st_mode), info.st_mtime) == (0o750, 1_234_567_890)


def test_device_node_replacing_symlink_is_made_inside(box: Box) -> None:
    box.apply(raw_tar([Raw("evil", SYM, linkname=str(box.outside / "newdev")),
                       Raw("evil", CHR, devmajor=1, devminor=3)]))
    assert kind(box.rootfs / "evil") == "char"


def test_xattrs_on_a_symlink_do_not_reach_its_target(box: Box, caplog: pytest.LogCaptureFixture) -> None:
    box.apply(raw_tar([Raw("s", SYM, linkname=str(box.outside / "bait"), pax={"SCHILY.xattr.user.bait": "2"})]))
    assert "cannot set extended attribute user.bait" in caplog.text


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_truncated_stream(box: Box, compression: str) -> None:
    """A cut-off stream is an error even when the descriptor describes the cut-off blob."""
    tar = raw_tar([Raw(f"f{i}", data=os.urandom(3000)) for i in range(20)])
    blob = compress(tar, compression)[:-100]
    with pytest.raises(LayerError, match=f"corrupt or truncated {compression} data: .* middle of a compressed member"):
        apply_layers(box.rootfs, [layer(tar, compression, blob=blob)], rootless=False)


def test_blob_larger_than_declared(box: Box) -> None:
    """A tar bomb: more bytes than the descriptor declares are refused as they arrive."""
    tar = raw_tar([Raw("big", data=bytes(5 << 20))])
    blob = compress(tar, "gzip")
    with pytest.raises(DigestMismatchError, match=f"more than the {len(blob) // 2} bytes"):
        apply_layers(box.rootfs, [layer(tar, "gzip", size=len(blob) // 2)], rootless=False)


def test_decompression_bomb_is_bounded(box: Box) -> None:
    """512 MiB of zeros in a few KiB of zstd is decompressed piecewise (flat memory), then refused."""
    compressor = zstandard.ZstdCompressor().compressobj()
    blob = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(512)) + compressor.flush()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(LayerError, match="does not match the diff_id"):
        apply_layers(box.rootfs, [layer(b"", "zstd", blob=blob)], rootless=False)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 128 * 1024  # KiB


# -- rootless ---------------------------------------------------------------------


def rootless_layers() -> list[bytes]:
    base = raw_tar([
        Raw("ro", DIR, mode=0o555), Raw("ro/f", data=b"in ro", mode=0o444, uid=1000, gid=1000),
        Raw("locked", DIR, mode=0o000), Raw("locked/g", data=b"g"), Raw("locked/h", data=b"h"),
        Raw("dev", DIR), Raw("dev/null", CHR, mode=0o666, devmajor=1, devminor=3),
        Raw("dev/sda", BLK, mode=0o660, devmajor=8), Raw("dev/fifo", FIFO, mode=0o600),
        Raw("owned", data=b"x", uid=1000), Raw("grouped", data=b"z", gid=5), Raw("root-owned", data=b"y"),
        Raw("bin", DIR), Raw("bin/ping", data=b"ELF", mode=0o4755, pax={
            "SCHILY.xattr.security.capability": pax_bytes(CAP_NET_RAW), "SCHILY.xattr.user.note": "n"}),
        Raw("link", SYM, linkname="owned", uid=1000, gid=1000),
    ])
    upper = raw_tar([Raw("ro/new", data=b"later"), Raw("locked/.wh.g")])
    return [base, upper]


@pytest.fixture(scope="module")
def test_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("creating the unprivileged test user needs root")
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", TEST_USER], check=True)
        return pwd.getpwnam(TEST_USER)


@pytest.fixture
def user_dir(test_user: pwd.struct_passwd) -> Iterator[Path]:
    """A directory the test user owns (pytest's tmp_path is under root's private /tmp/pytest-of-root)."""
    path = Path(tempfile.mkdtemp(prefix="ocitool-rootless-", dir="/tmp"))
    os.chown(path, test_user.pw_uid, test_user.pw_gid)
    yield path
    shutil.rmtree(path)


def as_user(user: pwd.struct_passwd, work: Callable[[], Any]) -> Any:
    """Run ``work()`` in a forked child with the user's uid and gid and no other groups.

    Forked rather than ``setpriv python ...``: the interpreter lives under /root, which
    the test user cannot read. The result (JSON) or error comes back through a pipe.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(user.pw_gid, user.pw_gid, user.pw_gid)
            os.setresuid(user.pw_uid, user.pw_uid, user.pw_uid)
            payload = {"result": work()}
        except BaseException as exc:  # reported to the parent
            payload = {"error": f"{type(exc).__name__}: {exc}"}
        with os.fdopen(write_end, "w") as out:
            json.dump(payload, out)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as incoming:
        payload = json.load(incoming)
    os.waitpid(pid, 0)
    assert "error" not in payload, payload["error"]
    return payload["result"]


class Collect(logging.Handler):
    """Keeps the messages logged."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def rootless_unpack(rootfs: Path, tars: list[bytes]) -> dict[str, Any]:
    """apply_layers(rootless=True), returning the warnings logged and the mtree text."""
    collect = Collect()
    logger = logging.getLogger("ocitool.bundle.extract")
    logger.addHandler(collect)
    try:
        mtree = apply_layers(rootfs, [layer(tar) for tar in tars], rootless=True)
    finally:
        logger.removeHandler(collect)
    return {"warnings": collect.messages, "mtree": mtree.render()}


def test_rootless_unpack_as_unprivileged_user(test_user: pwd.struct_passwd, user_dir: Path) -> None:
    rootfs = user_dir / "rootfs"
    result = as_user(test_user, lambda: rootless_unpack(rootfs, rootless_layers()))

    devices = [w for w in result["warnings"] if "device node" in w]
    assert len(devices) == 1 and "skipped 2 device node(s)" in devices[0]
    assert not (rootfs / "dev/null").exists() and not (rootfs / "dev/sda").exists()
    assert kind(rootfs / "dev/fifo") == "fifo"
    assert (rootfs / "ro/f").read_bytes() == b"in ro" and (rootfs / "ro/new").read_bytes() == b"later"
    assert (rootfs / "locked/h").exists() and not (rootfs / "locked/g").exists()
    assert {p: stat.S_IMODE(os.lstat(rootfs / p).st_mode) for p in ("ro", "locked", "ro/f", "bin/ping")} == {
        "ro": 0o555, "locked": 0o000, "ro/f": 0o444, "bin/ping": 0o4755}
    assert {os.lstat(rootfs / p).st_uid for p in listing(rootfs)} == {test_user.pw_uid}
    assert os.getxattr(rootfs / "owned", "user.rootlesscontainers") == b"\x08\xe8\x07\x10\xff\xff\xff\xff\x0f"
    assert os.getxattr(rootfs / "grouped", "user.rootlesscontainers") == b"\x08\xff\xff\xff\xff\x0f\x10\x05"
    assert os.getxattr(rootfs / "ro/f", "user.rootlesscontainers") == rootless_xattr(1000, 1000)
    assert "user.rootlesscontainers" not in os.listxattr(rootfs / "root-owned")
    assert os.listxattr(rootfs / "bin/ping") == ["user.note"]  # security.capability needs root
    recorded = parse_mtree(result["mtree"])["./ro/f"]  # the owner on disk; the image's in the xattr
    owner = (str(test_user.pw_uid), str(test_user.pw_gid))
    assert (recorded["uid"], recorded["gid"], recorded["mode"]) == (*owner, "0444")
    assert recorded["xattr.user.rootlesscontainers"] == base64.b64encode(rootless_xattr(1000, 1000)).decode()


def test_rootless_mtree_matches_umoci_rootless(test_user: pwd.struct_passwd, user_dir: Path) -> None:
    tars = rootless_layers()
    image = images.make_image(tars, compression="gzip")
    write_layout(user_dir / "layout", image)
    subprocess.run(["chown", "-R", f"{test_user.pw_uid}:{test_user.pw_gid}", str(user_dir / "layout")], check=True)
    subprocess.run(["setpriv", f"--reuid={test_user.pw_uid}", f"--regid={test_user.pw_gid}", "--clear-groups",
                    "umoci", "unpack", "--rootless", "--image", f"{user_dir}/layout:test", str(user_dir / "umoci")],
                   check=True, capture_output=True, cwd=user_dir)
    ours = as_user(test_user, lambda: rootless_unpack(user_dir / "ours", tars))["mtree"]
    theirs = parse_mtree(_umoci_mtree(user_dir / "umoci", image))
    # umoci makes empty files where devices were; ocitool skips them
    for device in ("./dev/null", "./dev/sda"):
        theirs.pop(device)
    # umoci 0.4.7 loses xattrs when rootless: it sets them after chmod (a 0444 file keeps no
    # user.rootlesscontainers) and its rootless mtree walk leaves out some it did set.
    assert without_xattrs(parse_mtree(ours)) == without_xattrs(theirs)
    assert parse_mtree(ours)["./bin/ping"]["xattr.user.note"] == base64.b64encode(b"n").decode()


# -- the mtree manifest against umoci ------------------------------------------------


def write_layout(path: Path, image: images.Image, ref: str = "test") -> None:
    """An OCI image layout holding ``image`` tagged ``ref``."""
    (path / "blobs/sha256").mkdir(parents=True)
    for blob in (*image.blobs, image.manifest):
        (path / "blobs/sha256" / blob.digest.split(":")[1]).write_bytes(blob.data)
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    descriptor = image.manifest.descriptor(annotations={"org.opencontainers.image.ref.name": ref})
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [descriptor]}))


def _umoci_mtree(bundle: Path, image: images.Image) -> str:
    return (bundle / f"{image.digest.replace(':', '_')}.mtree").read_text(encoding="utf-8", errors="surrogateescape")


def umoci_and_ours(tmp_path: Path, image: images.Image) -> tuple[str, Mtree]:
    """umoci's mtree text for ``image``, and ocitool's manifest of the same image."""
    write_layout(tmp_path / "layout", image)
    subprocess.run(["umoci", "unpack", "--image", f"{tmp_path}/layout:test", str(tmp_path / "umoci")],
                   check=True, capture_output=True)
    return _umoci_mtree(tmp_path / "umoci", image), apply_layers(tmp_path / "ours", image_sources(image),
                                                                 rootless=False)


def parse_mtree(text: str) -> dict[str, dict[str, str]]:
    """path -> keywords (with the ``/set`` defaults) of a go-mtree text manifest."""
    entries: dict[str, dict[str, str]] = {}
    cwd: list[str] = []
    defaults: dict[str, str] = {}
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "..":
            cwd.pop()
            continue
        keywords = dict(word.split("=", 1) for word in words[1:])
        if words[0] == "/set":
            defaults = keywords
            continue
        path = "/".join([*cwd, unvis(words[0])])
        entries[path] = {**defaults, **keywords}
        if entries[path]["type"] == "dir":
            cwd.append(unvis(words[0]))
    return entries


def without_xattrs(entries: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    return {path: {key: value for key, value in keywords.items() if not key.startswith("xattr.")}
            for path, keywords in entries.items()}


def unvis(name: str) -> str:
    """Undo go-mtree's name encoding (``\\ooo`` octal bytes, ``\\\\``)."""
    raw = re.sub(rb"\\([0-7]{3}|\\)", lambda m: b"\\" if m[1] == b"\\" else bytes([int(m[1], 8)]),
                 name.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "surrogateescape")


def body(text: str) -> str:
    """The manifest without go-mtree's signature comments (user, host, tree, date, keywords),
    with each line's xattr keywords sorted (umoci lists them in the order it happened to set them)."""
    signature = re.compile(r"#\s+(user|machine|tree|date|keywords):")
    lines = []
    for line in text.splitlines():
        if not signature.match(line):
            words = line.split(" ")
            xattrs = sorted(word for word in words if word.startswith("xattr."))
            lines.append(" ".join([word for word in words if not word.startswith("xattr.")] + xattrs))
    return "\n".join(lines)


KITCHEN_SINK = [
    Raw("etc", DIR, mode=0o755), Raw("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n"),
    Raw("etc/shadow", data=b"root:*::::::\n", mode=0o640, gid=42), Raw("etc/suid", data=b"s", mode=0o4755, uid=1000),
    Raw("etc/hard", LNK, linkname="etc/suid"), Raw("etc/link", SYM, linkname="../with space target"),
    Raw("etc/with space", data=b"x"), Raw("etc/tab\there", data=b"x"), Raw("etc/uni\u00e9", data=b"x"),
    Raw("etc/glob*?[#", data=b"x"), Raw("etc/back\\slash", data=b"x"), Raw("etc/nl\nname", data=b"x"),
    Raw("etc/empty", mode=0o600), Raw("etc/zero-mode", data=b"z", mode=0),
    Raw("home", DIR), Raw("home/user", DIR, mode=0o700, uid=1000, gid=1000, mtime=1_500_000_000),
    Raw("home/user/file", data=b"mine", uid=1000, gid=1000), Raw("home/user/root-file", data=b"root's"),
    Raw("home/zz", DIR), Raw("tmp", DIR, mode=0o1777),
    Raw("dev", DIR), Raw("dev/null", CHR, mode=0o666, devmajor=1, devminor=3),
    Raw("dev/sda", BLK, mode=0o660, gid=6, devmajor=8), Raw("dev/initctl", FIFO, mode=0o600),
    Raw("bin", DIR), Raw("bin/ping", data=b"ELF", mode=0o755, pax={
        "SCHILY.xattr.security.capability": pax_bytes(CAP_NET_RAW), "SCHILY.xattr.user.note": "n"}),
    Raw("x" * 120, DIR), Raw("x" * 120 + "/" + "y" * 150, data=b"long"),
]
KITCHEN_SINK_UPPER = [Raw("etc/.wh.shadow"), Raw("home/user/.wh..wh..opq"), Raw("home/user/new", data=b"n"),
                      Raw("etc/with space", DIR), Raw("tmp", DIR, mode=0o1777, mtime=1_650_000_000)]


@pytest.mark.parametrize("name", ["busybox", "whiteouts", "kitchen-sink"])
def test_mtree_is_what_umoci_writes(tmp_path: Path, name: str) -> None:
    image = {"busybox": images.busybox_image,
             "whiteouts": images.whiteout_image,
             "kitchen-sink": lambda: images.make_image([raw_tar(KITCHEN_SINK), raw_tar(KITCHEN_SINK_UPPER)])}[name]()
    theirs, ours = umoci_and_ours(tmp_path, image)
    assert parse_mtree(ours.render()) == parse_mtree(theirs)  # path by path: readable failures
    assert body(ours.render()) == body(theirs)  # and line by line: same order, /set lines, escaping
    assert ours.render().splitlines()[0] == theirs.splitlines()[0]  # "#          user: root"


def test_mtree_records_only_what_the_rootfs_holds(tmp_path: Path) -> None:
    mtree = extract(tmp_path / "rootfs", raw_tar(KITCHEN_SINK), raw_tar(KITCHEN_SINK_UPPER))
    recorded = {path.removeprefix("./") for path in parse_mtree(mtree.render())} - {"."}
    assert recorded == listing(tmp_path / "rootfs")
    written = tmp_path / "sha256_x.mtree"
    mtree.write(written)
    assert written.read_bytes() == os.fsencode(mtree.render())


def test_umoci_reads_our_mtree_and_sees_no_change(tmp_path: Path) -> None:
    """``umoci repack`` diffs the rootfs against the bundle's mtree: with ours, it finds no change
    (and no new layer); after a real change, exactly that change."""
    image = images.make_image([raw_tar(KITCHEN_SINK), raw_tar(KITCHEN_SINK_UPPER)])
    _, ours = umoci_and_ours(tmp_path, image)
    bundle = tmp_path / "umoci"
    ours.write(bundle / f"{image.digest.replace(':', '_')}.mtree")
    assert repacked_layers(tmp_path / "layout", bundle, "same") == []
    (bundle / "rootfs/etc/passwd").write_text("changed\n")
    assert repacked_layers(tmp_path / "layout", bundle, "changed") == [["etc/passwd"]]


def repacked_layers(layout: Path, bundle: Path, ref: str) -> list[list[str]]:
    """Run ``umoci repack``; return the names in each layer it added."""
    subprocess.run(["umoci", "repack", "--image", f"{layout}:{ref}", str(bundle)], check=True, capture_output=True)
    blob = lambda digest: (layout / "blobs/sha256" / digest.split(":")[1]).read_bytes()  # noqa: E731
    index = json.loads((layout / "index.json").read_text())
    tagged = {d["annotations"]["org.opencontainers.image.ref.name"]: d for d in index["manifests"]}
    old, new = (json.loads(blob(tagged[name]["digest"]))["layers"] for name in ("test", ref))
    added = new[len(old):]
    return [tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(d["digest"])))).getnames() for d in added]


def test_vis_encoding() -> None:
    assert vis("plain-name_1.2") == "plain-name_1.2"
    assert vis("a b\tc\nd") == r"a\040b\011c\012d"
    assert vis("*?[#]") == r"\052\077\133\043]"
    assert vis("back\\slash") == r"back\\slash"
    assert vis("é") == r"\303\251"
    assert unvis(vis("weird \\ é\n*")) == "weird \\ é\n*"


def test_mtree_xattr_keyword_is_base64(tmp_path: Path) -> None:
    mtree = extract(tmp_path / "rootfs", raw_tar([Raw("f", data=b"", pax={"SCHILY.xattr.user.k": "v v"})]))
    assert f"xattr.user.k={base64.b64encode(b'v v').decode()}" in mtree.render()
