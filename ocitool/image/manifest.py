"""Manifests and indexes (image-spec manifest.md, image-index.md, Docker schema2).

Parses what a registry or layout returns, refuses what we cannot handle (Docker
schema1, unknown media types), and converts Docker schema2 manifests to OCI ones so
that everything in the store is plain OCI, as skopeo does for an ``oci:`` destination.
"""

from __future__ import annotations

import json

from ocitool.errors import ManifestError
from ocitool.image.digest import validate_digest

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
ACCEPT = ", ".join(MANIFEST_TYPES + INDEX_TYPES)

# Docker layer media types and their OCI equivalents (image-spec conversion of Docker images).
DOCKER_TO_OCI = {
    DOCKER_MANIFEST: OCI_MANIFEST,
    DOCKER_MANIFEST_LIST: OCI_INDEX,
    DOCKER_CONFIG: OCI_CONFIG,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
}
LAYER_TYPES = frozenset({
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    *(t for t in DOCKER_TO_OCI if "rootfs" in t),
})
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


def decode_manifest(data: bytes, media_type: str | None, source: str) -> tuple[str, dict[str, Any]]:
    """Parse a manifest or index and return ``(media_type, document)``.

    ``media_type`` is the Content-Type or descriptor type we were given; when it is
    missing or generic the document's own ``mediaType`` decides. ``source`` names
    where the bytes came from, for error messages.
    """
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ManifestError(f"{source}: manifest is not valid JSON") from None
    if not isinstance(document, dict):
        raise ManifestError(f"{source}: manifest is not a JSON object")
    media_type = _effective_media_type(media_type, document)
    if media_type in DOCKER_SCHEMA1 or document.get("schemaVersion") == 1:
        raise ManifestError(f"{source}: Docker schema1 manifests are deprecated and not supported; "
                            "push the image again with a current Docker or skopeo")
    if media_type in INDEX_TYPES:
        _check_descriptors(document.get("manifests"), source, "manifests")
    elif media_type in MANIFEST_TYPES:
        _check_descriptors([document.get("config")], source, "config")
        _check_descriptors(document.get("layers"), source, "layers")
    else:
        raise ManifestError(f"{source}: unsupported manifest media type {media_type!r}")
    return media_type, document


def _effective_media_type(declared: str | None, document: dict[str, Any]) -> str:
    declared = (declared or "").split(";")[0].strip()
    own = document.get("mediaType")
    if declared in ("", "application/json", "text/plain", "application/octet-stream"):
        if isinstance(own, str) and own:
            return own
        # OCI allows mediaType to be absent: tell an index from a manifest by shape.
        return OCI_INDEX if "manifests" in document else OCI_MANIFEST
    return declared


def _check_descriptors(items: object, source: str, field: str) -> None:
    if not isinstance(items, list):
        raise ManifestError(f"{source}: manifest field '{field}' is missing or not a list")
    for item in items:
        if not (isinstance(item, dict) and isinstance(item.get("mediaType"), str)
                and isinstance(item.get("size"), int) and item["size"] >= 0):
            raise ManifestError(f"{source}: manifest field '{field}' has a malformed descriptor")
        try:
            validate_digest(item.get("digest"))
        except ManifestError as exc:
            raise ManifestError(f"{source}: manifest field '{field}': {exc}") from None


def is_index(media_type: str) -> bool:
    """True for an OCI index or a Docker manifest list."""
    return media_type in INDEX_TYPES


def check_layers_supported(manifest: dict[str, Any], source: str) -> None:
    """Refuse a manifest whose layers are not tar layers (e.g. an artifact)."""
    for layer in manifest["layers"]:
        if layer["mediaType"] not in LAYER_TYPES:
            raise ManifestError(f"{source}: unsupported layer media type {layer['mediaType']!r}")


def to_oci_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """An OCI image manifest with the same config and layers as a Docker schema2 one."""
    def convert(descriptor: dict[str, Any]) -> dict[str, Any]:
        converted = dict(descriptor)
        converted["mediaType"] = DOCKER_TO_OCI.get(descriptor["mediaType"], descriptor["mediaType"])
        return converted

    result: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                              "config": convert(manifest["config"]),
                              "layers": [convert(layer) for layer in manifest["layers"]]}
    if "annotations" in manifest:
        result["annotations"] = manifest["annotations"]
    return result


def canonical_json(document: dict[str, Any]) -> bytes:
    """Compact JSON bytes for a document we write ourselves (stable digest)."""
    return json.dumps(document, separators=(",", ":"), sort_keys=False).encode()
