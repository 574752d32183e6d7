"""Checks that a directory is a valid OCI image layout, as image-layout.md defines it.

Used after every pull and after faults (a killed pull, a lying registry): the store
must still validate, and nothing half-written may sit under ``blobs/``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

REF_NAME = "org.opencontainers.image.ref.name"


def blob_path(layout: Path, digest: str) -> Path:
    """``blobs/<alg>/<hex>`` of ``digest``."""
    algorithm, _, encoded = digest.partition(":")
    return layout / "blobs" / algorithm / encoded


def assert_valid_layout(layout: Path) -> dict[str, dict]:
    """Assert ``layout`` validates; return ref name -> descriptor from index.json."""
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    assert index["schemaVersion"] == 2
    for path in (layout / "blobs").glob("*/*"):
        data = path.read_bytes()
        assert hashlib.new(path.parent.name, data).hexdigest() == path.name, f"corrupt blob {path}"
    refs = {}
    for descriptor in index["manifests"]:
        _assert_complete(layout, descriptor)
        refs[descriptor.get("annotations", {}).get(REF_NAME)] = descriptor
    return refs


def _assert_complete(layout: Path, descriptor: dict) -> None:
    """Every blob the descriptor reaches exists with the declared size."""
    path = blob_path(layout, descriptor["digest"])
    assert path.is_file(), f"missing blob {descriptor['digest']}"
    assert path.stat().st_size == descriptor["size"], f"wrong size for {descriptor['digest']}"
    if descriptor["mediaType"].endswith(("manifest.v1+json", "index.v1+json")):
        document = json.loads(path.read_bytes())
        children = document.get("manifests", []) + document.get("layers", [])
        children += [document["config"]] if "config" in document else []
        for child in children:
            _assert_complete(layout, child)


def blob_digests(layout: Path) -> set[str]:
    """Digests of every blob file present."""
    return {f"{p.parent.name}:{p.name}" for p in (layout / "blobs").glob("*/*")}
