"""Views of images for ``images`` and ``inspect``: plain dicts, ready to print as JSON."""

from __future__ import annotations

import json

from ocitool.image.manifest import decode_manifest
from ocitool.image.reference import parse_reference

TYPE_CHECKING = False  # type checkers treat this as True; these imports serve annotations only
if TYPE_CHECKING:
    from typing import Any

    from ocitool.image.store import ImageStore


class LocalImage:
    """An image in the store, loaded: its ref, manifest and config."""

    __slots__ = ("name", "descriptor", "manifest_bytes", "manifest", "config_bytes")

    def __init__(self, name: str, descriptor: dict[str, Any], manifest_bytes: bytes, manifest: dict[str, Any],
                 config_bytes: bytes):
        self.name = name
        self.descriptor = descriptor
        self.manifest_bytes = manifest_bytes
        self.manifest = manifest
        self.config_bytes = config_bytes

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_bytes)


def load_local(store: ImageStore, name: str) -> LocalImage:
    """Load the image tagged ``name`` (a normalized reference) from the store."""
    descriptor = store.resolve(name)
    manifest_bytes = store.read_blob(descriptor["digest"])
    _, manifest = decode_manifest(manifest_bytes, descriptor.get("mediaType"), descriptor["digest"])
    return LocalImage(name, descriptor, manifest_bytes, manifest, store.read_blob(manifest["config"]["digest"]))


def summary(name: str, digest: str, manifest: dict[str, Any], config: dict[str, Any],
            tags: list[str] | None = None) -> dict[str, Any]:
    """The fields ``skopeo inspect`` shows, so scripts written for it keep working."""
    container = config.get("config") or {}
    return {
        "Name": parse_reference(name).name,
        "Digest": digest,
        "RepoTags": tags if tags is not None else [],
        "Created": config.get("created"),
        "DockerVersion": config.get("docker_version", ""),
        "Labels": container.get("Labels"),
        "Architecture": config.get("architecture"),
        "Os": config.get("os"),
        **({"Variant": config["variant"]} if config.get("variant") else {}),
        "Layers": [layer["digest"] for layer in manifest["layers"]],
        "LayersData": [{"MIMEType": layer["mediaType"], "Digest": layer["digest"], "Size": layer["size"],
                        "Annotations": layer.get("annotations")} for layer in manifest["layers"]],
        "Env": container.get("Env"),
    }


def list_images(store: ImageStore) -> list[dict[str, Any]]:
    """One row per tagged image: name, repository, tag, digest, platform, created, size."""
    rows = []
    for name, descriptor in sorted(store.refs().items()):
        image = load_local(store, name)
        ref = parse_reference(name)
        config = image.config
        platform = "/".join(p for p in (config.get("os"), config.get("architecture"), config.get("variant")) if p)
        size = descriptor["size"] + image.manifest["config"]["size"] + sum(
            layer["size"] for layer in image.manifest["layers"])
        rows.append({"name": name, "repository": ref.name, "tag": ref.tag or "<none>", "digest": descriptor["digest"],
                     "platform": platform, "created": config.get("created"), "size": size})
    return rows
