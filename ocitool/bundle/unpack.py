"""``unpack``: turn an image from an OCI layout into a runtime bundle.

A bundle holds ``rootfs/``, ``config.json``, ``sha256_<manifest hex>.mtree`` and
``ocitool.json`` (same shape as umoci's). It is built in a temporary sibling directory
and renamed into place only when complete, so a failure leaves nothing half-made.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ocitool.bundle.convert import runtime_config
from ocitool.bundle.extract import apply_layers
from ocitool.bundle.layers import LayerSource
from ocitool.bundle.spec import write_spec
from ocitool.errors import ManifestError, OcitoolError
from ocitool.fsutil import make_temp_dir, remove_tree
from ocitool.image.inspect import LocalImage, load_local
from ocitool.image.store import ImageStore
from ocitool.log import get_logger

TYPE_CHECKING = False  # type checkers treat this as True; this import serves annotations only
if TYPE_CHECKING:
    from typing import Any

BUNDLE_RECORD = "ocitool.json"
log = get_logger(__name__)


class UnpackResult:
    """What ``unpack`` made."""

    __slots__ = ("bundle", "manifest_digest", "mtree_name")

    def __init__(self, bundle: Path, manifest_digest: str, mtree_name: str):
        self.bundle = bundle
        self.manifest_digest = manifest_digest
        self.mtree_name = mtree_name


def unpack(store: ImageStore, name: str, bundle: Path, *, rootless: bool) -> UnpackResult:
    """Unpack the image tagged ``name`` in ``store`` into a new bundle directory ``bundle``."""
    image = load_local(store, name)
    layers = _layer_sources(store, image)
    bundle = bundle.absolute()
    _check_destination(bundle)
    staging = Path(make_temp_dir(bundle.parent, f".{bundle.name}.ocitool-"))
    try:
        os.chmod(staging, 0o755)
        rootfs = staging / "rootfs"
        rootfs.mkdir(mode=0o755)
        mtree = apply_layers(rootfs, layers, rootless=rootless)
        mtree_name = f"{image.descriptor['digest'].replace(':', '_')}.mtree"
        mtree.tree = bundle / "rootfs"  # where it will be, not the staging directory
        mtree.write(staging / mtree_name)
        spec = runtime_config(image.config, rootfs, rootless=rootless)
        if not spec["process"]["args"]:
            log.warning("the image has no Entrypoint or Cmd: config.json has empty process.args; "
                        "give a command when running it")
        write_spec(staging, spec)
        _write_record(staging / BUNDLE_RECORD, image, rootless, mtree_name)
        _move_into_place(staging, bundle)
    except BaseException:
        remove_tree(staging)
        raise
    return UnpackResult(bundle, image.descriptor["digest"], mtree_name)


def _layer_sources(store: ImageStore, image: LocalImage) -> list[LayerSource]:
    layers = image.manifest["layers"]
    diff_ids = (image.config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(layers):
        raise ManifestError(f"{image.name}: config lists {len(diff_ids)} diff_ids for {len(layers)} layers")
    return [LayerSource(open_blob=lambda d=layer["digest"]: store.open_blob(d), media_type=layer["mediaType"],
                        digest=layer["digest"], size=layer["size"], diff_id=diff_id)
            for layer, diff_id in zip(layers, diff_ids)]


def _check_destination(bundle: Path) -> None:
    if bundle.is_symlink() or (bundle.exists() and (not bundle.is_dir() or any(bundle.iterdir()))):
        raise OcitoolError(f"bundle {bundle} already exists and is not an empty directory")
    if not bundle.parent.is_dir():
        raise OcitoolError(f"cannot create bundle {bundle}: {bundle.parent} is not a directory")


def _write_record(path: Path, image: LocalImage, rootless: bool, mtree_name: str) -> None:
    """``ocitool.json``: where the bundle came from, so later tools (repack, run) can find out."""
    record: dict[str, Any] = {
        "source": image.name,
        "manifest": image.descriptor["digest"],
        "config": image.manifest["config"]["digest"],
        "layers": [layer["digest"] for layer in image.manifest["layers"]],
        "diff_ids": image.config["rootfs"]["diff_ids"],
        "rootless": rootless,
        "mtree": mtree_name,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")


def _move_into_place(staging: Path, bundle: Path) -> None:
    if bundle.is_dir():
        bundle.rmdir()  # an empty directory the user made for us
    os.rename(staging, bundle)
