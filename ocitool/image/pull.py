"""``pull``: copy one image from a registry into the store.

Order matters for crash safety: config and layers first, then the manifest, then the
ref in ``index.json``, so a ref never points at content that is not all there.
"""

from __future__ import annotations

import json
import threading

from ocitool.config import Config
from ocitool.errors import ManifestError, OcitoolError
from ocitool.image.digest import sha256_digest
from ocitool.image.manifest import (DOCKER_MANIFEST, OCI_MANIFEST, canonical_json, check_layers_supported,
                                    decode_manifest, is_index, to_oci_manifest)
from ocitool.image.platform import Platform, host_platform, select_manifest
from ocitool.image.reference import Reference
from ocitool.image.registry import RegistryClient
from ocitool.image.access import AccessOptions
from ocitool.image.remote import open_manifest
from ocitool.image.store import ImageStore
from ocitool.progress import NoProgress
from ocitool.log import get_logger

TYPE_CHECKING = False  # type checkers treat this as True; these imports serve annotations only
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ocitool.progress import Progress

log = get_logger(__name__)
MAX_CONFIG_BYTES = 8 * 1024 * 1024
DEFAULT_JOBS = 4


class RemoteImage:
    """One platform's manifest as resolved from a registry, not yet stored."""

    __slots__ = ("client", "ref", "manifest", "manifest_bytes", "media_type", "digest", "platform")

    def __init__(self, client: RegistryClient, ref: Reference, manifest: dict[str, Any], manifest_bytes: bytes,
                 media_type: str, digest: str, platform: Platform | None):
        self.client = client
        self.ref = ref
        self.manifest = manifest
        self.manifest_bytes = manifest_bytes
        self.media_type = media_type
        self.digest = digest          # the digest the registry knows the manifest by
        self.platform = platform


class PullResult:
    """What a pull stored."""

    __slots__ = ("name", "digest", "registry_digest", "platform")

    def __init__(self, name: str, digest: str, registry_digest: str, platform: Platform | None):
        self.name = name                        # the ref name in index.json
        self.digest = digest                    # the stored (OCI) manifest's digest
        self.registry_digest = registry_digest  # at the registry (differs for converted Docker manifests)
        self.platform = platform


class _Cancelled(Exception):
    """Another download of the same pull failed; stop this one."""


def resolve(ref: Reference, config: Config, access: AccessOptions = AccessOptions(),
            platform: Platform | None = None) -> RemoteImage:
    """Fetch ``ref``'s manifest, choosing ``platform`` (default: this host's) from an index."""
    client, top = open_manifest(ref, config, access)
    try:
        media_type, document = decode_manifest(top.data, top.media_type, str(ref))
        response, chosen = top, None
        if is_index(media_type):
            descriptor = select_manifest(document, platform or host_platform(), str(ref))
            response = client.get_manifest(ref.repository, descriptor["digest"])
            media_type, document = decode_manifest(response.data, descriptor["mediaType"], str(ref))
            if is_index(media_type):
                raise ManifestError(f"{ref}: nested indexes are not supported")
            chosen = platform or host_platform()
        check_layers_supported(document, str(ref))
        return RemoteImage(client, ref, document, response.data, media_type, response.digest, chosen)
    except BaseException:
        client.close()
        raise


def fetch_config(image: RemoteImage) -> bytes:
    """The image's config blob, verified and checked to be a JSON object."""
    descriptor = image.manifest["config"]
    if descriptor["size"] > MAX_CONFIG_BYTES:
        raise ManifestError(f"{image.ref}: image config of {descriptor['size']} bytes is implausibly large")
    data = image.client.get_blob_bytes(image.ref.repository, descriptor)
    try:
        if isinstance(json.loads(data), dict):
            return data
    except ValueError:
        pass
    raise ManifestError(f"{image.ref}: image config {descriptor['digest']} is not a JSON object")


def pull(ref: Reference, store: ImageStore, config: Config, access: AccessOptions = AccessOptions(),
         platform: Platform | None = None, progress: Progress = NoProgress(),
         jobs: int = DEFAULT_JOBS) -> PullResult:
    """Copy ``ref`` (one platform) into ``store`` and tag it with its normalized name."""
    image = resolve(ref, config, access, platform)
    try:
        with store.writing():
            config_bytes = _fetch_content(image, store, progress, jobs, platform)
            store.put_blob(config_bytes, image.manifest["config"]["digest"])
            descriptor = _store_manifest(image, store, config_bytes)
            store.set_ref(str(ref), descriptor)
    finally:
        image.client.close()
    return PullResult(str(ref), descriptor["digest"], image.digest, image.platform)


def _check_platform(image: RemoteImage, config_bytes: bytes, wanted: Platform | None) -> None:
    actual = _config_platform(config_bytes)
    if wanted and actual and not wanted.matches(actual):
        raise OcitoolError(f"{image.ref} is a single-platform image for {actual}, not {wanted}")
    host = host_platform()
    if not wanted and actual and not host.matches(actual):
        log.warning("%s is for platform %s, which does not match this host (%s)", image.ref, actual, host)


def _config_platform(config_bytes: bytes) -> Platform | None:
    document = json.loads(config_bytes)
    if not document.get("os") or not document.get("architecture"):
        return None
    return Platform(document["os"], document["architecture"], document.get("variant", ""))


def _store_manifest(image: RemoteImage, store: ImageStore, config_bytes: bytes) -> dict[str, Any]:
    """Write the manifest blob (as OCI) and return the descriptor a ref should hold."""
    data = image.manifest_bytes
    if image.media_type == DOCKER_MANIFEST:
        data = canonical_json(to_oci_manifest(image.manifest))
    digest = image.digest if data is image.manifest_bytes else sha256_digest(data)
    store.put_blob(data, digest)
    descriptor: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(data)}
    if platform := _config_platform(config_bytes):
        descriptor["platform"] = {"architecture": platform.architecture, "os": platform.os}
        if platform.variant:
            descriptor["platform"]["variant"] = platform.variant
    return descriptor


def _fetch_content(image: RemoteImage, store: ImageStore, progress: Progress, jobs: int,
                   platform: Platform | None) -> bytes:
    """Fetch the config (checked against ``platform``) and download the layers the store lacks,
    ``jobs`` requests at a time; return the config. The first failure cancels the rest."""
    wanted: dict[str, dict[str, Any]] = {}
    for layer in image.manifest["layers"]:
        if store.has_blob(layer["digest"]):
            progress.start(layer["digest"], layer["size"], "layer")
            progress.finish(layer["digest"], "already present")
        else:
            wanted.setdefault(layer["digest"], layer)
    config: list[bytes] = []
    cancel = threading.Event()

    def get_config() -> None:
        data = fetch_config(image)
        _check_platform(image, data, platform)
        config.append(data)

    downloads = [lambda layer=layer: _download_blob(image, store, layer, progress, cancel)
                 for layer in wanted.values()]
    _in_parallel([get_config, *downloads], jobs, cancel)
    return config[0]


def _in_parallel(tasks: list[Callable[[], None]], jobs: int, cancel: threading.Event) -> None:
    """Run ``tasks`` on up to ``jobs`` threads, this one included. The first failure sets ``cancel``
    (downloads stop at their next chunk), stops handing out tasks, and is raised here."""
    pending = iter(tasks)
    take = threading.Lock()
    failures: list[BaseException] = []

    def work() -> None:
        while not cancel.is_set():
            with take:
                task = next(pending, None)
            if task is None:
                return
            try:
                task()
            except BaseException as exc:  # noqa: BLE001 - raised again below, in the calling thread
                failures.append(exc)
                cancel.set()

    helpers = [threading.Thread(target=work, name=f"pull-{n}") for n in range(min(jobs, len(tasks)) - 1)]
    try:
        for helper in helpers:
            helper.start()
        work()  # this thread works too: a single task needs no thread at all
        for helper in helpers:
            helper.join()
    except BaseException:
        cancel.set()  # Ctrl-C while waiting
        raise
    if failures:
        raise failures[0]


def _download_blob(image: RemoteImage, store: ImageStore, descriptor: dict[str, Any],
                   progress: Progress, cancel: threading.Event) -> None:
    digest = descriptor["digest"]

    def on_bytes(nbytes: int) -> None:
        if cancel.is_set():
            raise _Cancelled()
        progress.advance(digest, nbytes)

    progress.start(digest, descriptor["size"], "layer")
    with store.blob_writer(digest, descriptor["size"]) as writer:
        try:
            image.client.fetch_blob(image.ref.repository, descriptor, writer, on_bytes)
        except _Cancelled:
            return
        writer.commit()
    progress.finish(digest, "done")
