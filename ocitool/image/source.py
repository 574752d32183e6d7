"""Where ``unpack`` and ``run`` get an image: ``oci:PATH[:REF]``, or the store (pulled per policy)."""

from __future__ import annotations

from pathlib import Path

from ocitool.image.access import PULL_POLICIES, AccessOptions
from ocitool.errors import NotFoundError, OcitoolError, StoreError
from ocitool.image.reference import parse_reference
from ocitool.image.store import ImageStore

TYPE_CHECKING = False  # type checkers treat this as True; these imports serve annotations only
if TYPE_CHECKING:
    from collections.abc import Callable

    from ocitool.config import Config
    from ocitool.image.platform import Platform
    from ocitool.progress import Progress

LAYOUT_PREFIX = "oci:"


def local_image(text: str, open_store: Callable[[], ImageStore], get_config: Callable[[], Config],
                policy: str = "missing", access: AccessOptions = AccessOptions(), platform: Platform | None = None,
                progress: Callable[[], Progress] | None = None) -> tuple[ImageStore, str]:
    """The layout and ref name holding IMAGE ``text``, pulling it into the store when the policy says so.

    ``open_store`` is called only for store references, so ``oci:`` sources leave no store behind;
    ``get_config`` and ``progress`` (which makes the pull's progress display; None shows nothing)
    only when a pull happens, so an image already in the store needs no config file.
    """
    if text.startswith(LAYOUT_PREFIX):
        return open_layout_reference(text[len(LAYOUT_PREFIX):])
    store = open_store()
    if policy not in PULL_POLICIES:
        raise OcitoolError(f"--pull must be one of {', '.join(PULL_POLICIES)}, not {policy!r}")
    ref = parse_reference(text)
    name = str(ref)
    present = name in store.refs()
    if policy == "always" or (policy == "missing" and not present):
        from ocitool.image.pull import pull  # the HTTP stack loads only when a pull happens
        from ocitool.progress import NoProgress
        pull(ref, store, get_config(), access, platform, (progress or NoProgress)())
    elif not present:
        raise NotFoundError(f"image {name} is not in the store and --pull=never forbids pulling it")
    return store, name


def open_layout_reference(text: str) -> tuple[ImageStore, str]:
    """``PATH[:REF]`` of an existing OCI layout (e.g. skopeo's output); REF may be left out when the
    layout holds a single image."""
    path, _, name = text.partition(":")
    layout = Path(path)
    if not (layout / "oci-layout").is_file():
        raise StoreError(f"{layout} is not an OCI image layout (no oci-layout file)")
    store = ImageStore(layout)
    if name:
        return store, name
    names = list(store.refs())
    if len(names) != 1:
        raise NotFoundError(f"{layout} holds {len(names)} named images: say which with oci:{layout}:REF "
                            f"({', '.join(names) or 'none'})")
    return store, names[0]
