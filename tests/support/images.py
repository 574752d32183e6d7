"""Build small OCI and Docker schema2 images in memory, byte-for-byte reproducibly.

Tests push these to a real registry and then compare what ocitool pulled and unpacked
with what was built, so every timestamp, owner and compression header is fixed.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass
from typing import Any, Literal

import zstandard

MTIME = 1_700_000_000
CREATED = "2023-11-14T22:13:20Z"
BUSYBOX_PATH = "/bin/busybox"
APPLETS = ("sh", "ls", "echo", "cat", "true", "false", "id", "hostname", "env", "sleep",
           "mkdir", "rm", "touch", "pwd", "uname", "ps", "grep", "head", "whoami", "test",
           "wc", "stat", "cut", "printf", "kill", "readlink", "chmod", "ln", "sort", "tr",
           "sed", "seq", "mount", "umount")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"

Compression = Literal["gzip", "zstd", "none"]
_SUFFIX = {"gzip": "+gzip", "zstd": "+zstd", "none": ""}
_DOCKER_SUFFIX = {"gzip": ".gzip", "none": ""}


@dataclass(frozen=True)
class Blob:
    """Content-addressed bytes with the media type they are referenced by."""

    media_type: str
    data: bytes

    @functools.cached_property
    def digest(self) -> str:
        """``sha256:<hex>`` of the data."""
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        """Length of the data in bytes."""
        return len(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        """An OCI descriptor for this blob, plus ``extra`` fields (platform, annotations...)."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclass(frozen=True)
class Image:
    """A single-platform image: config, layers (in order) and the manifest referencing them."""

    config: Blob
    layers: list[Blob]
    manifest: Blob

    @property
    def digest(self) -> str:
        """The manifest digest, i.e. what a registry reports for the tag."""
        return self.manifest.digest

    @property
    def blobs(self) -> list[Blob]:
        """Config and layers: everything the manifest references."""
        return [self.config, *self.layers]


@dataclass(frozen=True)
class Index:
    """A multi-platform image: child images with their platform dicts, and the index blob."""

    manifests: list[tuple[Image, dict[str, str]]]
    index: Blob

    @property
    def digest(self) -> str:
        """The index digest, i.e. what a registry reports for the tag."""
        return self.index.digest


@dataclass(frozen=True)
class File:
    """A regular file in a layer (also used for whiteout marker files)."""

    path: str
    content: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Dir:
    """A directory in a layer."""

    path: str
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Symlink:
    """A symbolic link ``path`` -> ``target`` (target stored verbatim)."""

    path: str
    target: str


@dataclass(frozen=True)
class Hardlink:
    """A hard link ``path`` to ``target``, an earlier entry of the same layer."""

    path: str
    target: str


Entry = File | Dir | Symlink | Hardlink


def whiteout(path: str) -> File:
    """The marker that deletes ``path`` from lower layers (``dir/.wh.name``)."""
    parent, _, name = path.strip("/").rpartition("/")
    return File(f"{parent}/.wh.{name}" if parent else f".wh.{name}", mode=0o600)


def opaque(directory: str) -> File:
    """The marker that hides everything lower layers put in ``directory``."""
    return File(f"{directory.strip('/')}/.wh..wh..opq", mode=0o600)


def _tarinfo(entry: Entry) -> tarfile.TarInfo:
    """The tar header for one entry, with the fixed mtime."""
    info = tarfile.TarInfo(entry.path.strip("/"))
    info.mtime = MTIME
    if isinstance(entry, (File, Dir)):
        info.mode, info.uid, info.gid = entry.mode, entry.uid, entry.gid
    if isinstance(entry, File):
        info.size = len(entry.content)
    elif isinstance(entry, Dir):
        info.type = tarfile.DIRTYPE
    elif isinstance(entry, Symlink):
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.target, 0o777
    else:
        info.type, info.linkname = tarfile.LNKTYPE, entry.target.strip("/")
    return info


def tar_layer(entries: list[Entry]) -> bytes:
    """An uncompressed layer tar with ``entries`` in order (paths relative, no leading ``/``)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            content = io.BytesIO(entry.content) if isinstance(entry, File) else None
            tar.addfile(_tarinfo(entry), content)
    return buf.getvalue()


def compress(data: bytes, compression: Compression, gzip_level: int = 6) -> bytes:
    """Compress a layer reproducibly (gzip with mtime 0, zstd level 3, or not at all)."""
    if compression == "gzip":
        return gzip.compress(data, compresslevel=gzip_level, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    if compression == "none":
        return data
    raise ValueError(f"unknown compression {compression!r}")


def _layer_media_type(compression: Compression, docker: bool) -> str:
    """The layer media type for this compression in the OCI or Docker vocabulary."""
    if not docker:
        return OCI_LAYER + _SUFFIX[compression]
    if compression not in _DOCKER_SUFFIX:
        raise ValueError(f"Docker schema2 has no media type for {compression} layers")
    return DOCKER_LAYER + _DOCKER_SUFFIX[compression]


def _json_blob(media_type: str, obj: dict[str, Any]) -> Blob:
    """Serialize ``obj`` compactly and deterministically as a blob."""
    return Blob(media_type, json.dumps(obj, separators=(",", ":")).encode())


def make_image(layers_tar: list[bytes], compression: Compression = "gzip",
               config_extra: dict[str, Any] | None = None, arch: str = "amd64",
               os_: str = "linux", docker_media_types: bool = False,
               gzip_level: int = 6) -> Image:
    """Build an image from uncompressed layer tars.

    ``config_extra`` is merged into the image config's runtime ``config`` section
    (Cmd, Entrypoint, Env, User, WorkingDir, Labels, ...). diff_ids are the digests of
    the uncompressed tars; with ``docker_media_types`` the manifest, config and layers
    use Docker schema2 media types instead of OCI ones.
    """
    layer_type = _layer_media_type(compression, docker_media_types)
    layers = [Blob(layer_type, compress(tar, compression, gzip_level)) for tar in layers_tar]
    config = _json_blob(DOCKER_CONFIG if docker_media_types else OCI_CONFIG, {
        "created": CREATED, "architecture": arch, "os": os_,
        "config": dict(config_extra or {}),
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(t).hexdigest() for t in layers_tar]},
        "history": [{"created": CREATED, "created_by": f"ocitool tests: layer {i}"}
                    for i in range(len(layers_tar))],
    })
    manifest_type = DOCKER_MANIFEST if docker_media_types else OCI_MANIFEST
    manifest = _json_blob(manifest_type, {
        "schemaVersion": 2, "mediaType": manifest_type,
        "config": config.descriptor(), "layers": [layer.descriptor() for layer in layers],
    })
    return Image(config, layers, manifest)


def make_index(images: list[tuple[Image, dict[str, str]]]) -> Index:
    """An OCI image index over ``images``, each paired with its platform dict."""
    index = _json_blob(OCI_INDEX, {
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [image.manifest.descriptor(platform=platform) for image, platform in images],
    })
    return Index(list(images), index)


@functools.cache
def busybox_entries() -> tuple[Entry, ...]:
    """A minimal root filesystem: static busybox with applet links, passwd/group, /tmp, /root."""
    with open(BUSYBOX_PATH, "rb") as f:
        busybox = f.read()
    return (
        Dir("bin"), File("bin/busybox", busybox, mode=0o755),
        *(Symlink(f"bin/{applet}", "busybox") for applet in APPLETS),
        Dir("etc"),
        File("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
                           b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
        File("etc/group", b"root:x:0:\nnogroup:x:65534:\n"),
        Dir("tmp", mode=0o1777), Dir("root", mode=0o700),
    )


BUSYBOX_CONFIG = {"Cmd": ["sh"], "Env": [DEFAULT_PATH]}


@functools.cache
def busybox_image(arch: str = "amd64", docker_media_types: bool = False) -> Image:
    """A runnable one-layer busybox image (the binary is the host's x86-64 busybox-static)."""
    return make_image([tar_layer(list(busybox_entries()))], config_extra=BUSYBOX_CONFIG,
                      arch=arch, docker_media_types=docker_media_types)


@functools.cache
def whiteout_image() -> Image:
    """Three layers exercising whiteouts; the unpacked rootfs must end up as:

    ``/a/file2``, ``/dir/x/y``, ``/replace-me`` (a regular file saying "now a file"),
    ``/opq/new`` -- and no ``/a/file1``, ``/replace-me/inner``, ``/opq/old1``, ``/opq/old2``
    nor any ``.wh.`` file.
    """
    base = [Dir("a"), File("a/file1", b"file1\n"), File("a/file2", b"file2\n"),
            Dir("dir"), Dir("dir/x"), File("dir/x/y", b"y\n"),
            Dir("replace-me"), File("replace-me/inner", b"inner\n")]
    second = [Dir("a"), whiteout("a/file1"),
              whiteout("replace-me"), File("replace-me", b"now a file\n"),
              Dir("opq"), File("opq/old1", b"old1\n"), File("opq/old2", b"old2\n")]
    third = [Dir("opq"), opaque("opq"), File("opq/new", b"new\n")]
    return make_image([tar_layer(layer) for layer in (base, second, third)])


@functools.cache
def zstd_image() -> Image:
    """The busybox root filesystem as a single zstd-compressed layer."""
    return make_image([tar_layer(list(busybox_entries()))], compression="zstd",
                      config_extra=BUSYBOX_CONFIG)


@functools.cache
def two_platform_index() -> Index:
    """An OCI index of linux/amd64 and linux/arm64 images.

    Both share the busybox layer; a second layer holds ``/platform`` containing
    ``amd64\\n`` or ``arm64\\n`` so a test can tell which one was unpacked.
    """
    busybox_tar = tar_layer(list(busybox_entries()))
    images = []
    for arch in ("amd64", "arm64"):
        platform_tar = tar_layer([File("platform", f"{arch}\n".encode())])
        image = make_image([busybox_tar, platform_tar], config_extra=BUSYBOX_CONFIG, arch=arch)
        images.append((image, {"architecture": arch, "os": "linux"}))
    return make_index(images)


def big_random_image(layer_sizes: list[int], compression: Compression = "none",
                     seed: int = 0) -> Image:
    """An image whose layers each hold one incompressible file of the given size.

    The data comes from a seeded PRNG, so the image is reproducible; gzip uses level 1
    because compressing random data harder only costs time.
    """
    rng = random.Random(seed)
    tars = [tar_layer([Dir("data"), File(f"data/blob{i}", rng.randbytes(size))])
            for i, size in enumerate(layer_sizes)]
    return make_image(tars, compression=compression, gzip_level=1)
