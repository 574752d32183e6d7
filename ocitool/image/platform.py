"""Platforms (os/arch/variant) and choosing one manifest out of an index."""

from __future__ import annotations

import os

from ocitool.errors import NotFoundError, OcitoolError

TYPE_CHECKING = False  # type checkers treat this as True; this import serves annotations only
if TYPE_CHECKING:
    from typing import Any

# uname machine -> (GOARCH, variant), as Go and containerd name them.
_MACHINE_ARCH = {
    "x86_64": ("amd64", ""), "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"), "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"), "armv5tel": ("arm", "v5"),
    "i386": ("386", ""), "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""), "riscv64": ("riscv64", ""),
}


class Platform:
    """An image platform; an empty variant matches any variant."""

    __slots__ = ("os", "architecture", "variant")

    def __init__(self, os: str, architecture: str, variant: str = ""):
        self.os = os
        self.architecture = architecture
        self.variant = variant

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Platform) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Platform({self.os!r}, {self.architecture!r}, {self.variant!r})"

    def _key(self) -> tuple[str, str, str]:
        return self.os, self.architecture, self.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def matches(self, other: "Platform") -> bool:
        """True when ``other`` (an image's platform) can run where ``self`` is wanted."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        return not self.variant or _normal_variant(other) == _normal_variant(self)


def _normal_variant(p: Platform) -> str:
    # arm64 images mostly omit "v8"; treat that as the same variant.
    return p.variant or ("v8" if p.architecture == "arm64" else "")


def host_platform() -> Platform:
    """The platform of this machine."""
    machine = os.uname().machine  # what platform.machine() reads, without importing platform
    arch, variant = _MACHINE_ARCH.get(machine, (machine, ""))
    return Platform("linux", arch, variant)


def parse_platform(text: str) -> Platform:
    """Parse ``os/arch[/variant]`` as given to ``--platform``."""
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise OcitoolError(f"invalid platform {text!r}: expected os/arch[/variant], e.g. linux/arm64")
    return Platform(*parts)


def platform_of(descriptor: dict[str, Any]) -> Platform | None:
    """The platform a descriptor in an index declares, if any."""
    raw = descriptor.get("platform")
    if not isinstance(raw, dict):
        return None
    return Platform(str(raw.get("os", "")), str(raw.get("architecture", "")), str(raw.get("variant", "")))


def select_manifest(index: dict[str, Any], wanted: Platform, source: str) -> dict[str, Any]:
    """The descriptor of ``index`` for ``wanted``; exact variant preferred over a loose match.

    The error lists the platforms the image does have, so the user can pick one.
    """
    candidates = [(d, platform_of(d)) for d in index["manifests"]]
    runnable = [(d, p) for d, p in candidates if p and wanted.matches(p)]
    if runnable:
        exact = [d for d, p in runnable if _normal_variant(p) == _normal_variant(wanted)]
        return (exact or [d for d, _ in runnable])[0]
    available = sorted({str(p) for _, p in candidates if p and p.os != "unknown"})
    raise NotFoundError(f"{source} has no image for platform {wanted}; "
                        f"available: {', '.join(available) or 'none declared'} (choose one with --platform)")
