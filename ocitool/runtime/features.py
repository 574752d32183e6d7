"""``features``: what this runtime supports, in the shape of runc's ``features`` JSON."""

from __future__ import annotations

from ocitool.runtime import capabilities, mounts, namespaces, seccomp

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from typing import Any

HOOKS = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]


def features() -> dict[str, Any]:
    """The runtime-spec features document (features.md)."""
    supported = seccomp.seccomp_supported()
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": HOOKS,
        "mountOptions": sorted(mounts.MOUNT_OPTIONS),
        "linux": {
            "namespaces": sorted(namespaces.NAMESPACE_FLAGS),
            "capabilities": sorted(capabilities.CAPABILITIES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {
                "enabled": supported,
                "actions": seccomp.known_actions() if supported else [],
                "operators": seccomp.known_operators() if supported else [],
                "archs": seccomp.known_archs() if supported else [],
                "knownFlags": seccomp.known_flags() if supported else [],
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
        },
        "annotations": {"org.opencontainers.runtime-spec.features.ocitool": "python"},
    }
