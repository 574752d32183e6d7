"""Where ocitool keeps its state and what the user configured (CONTRACT.md, "Global options").

Shared by every stage: the state root holds the image store and later the rootfs cache,
and the TOML config says which registries are insecure and which mirrors to try.
"""

from __future__ import annotations

import os
from pathlib import Path

from ocitool.errors import ConfigError

LOOPBACK_HOSTS = ("localhost", "::1", "[::1]")


class RegistryConfig:
    """Per-registry settings from the ``[registries."host"]`` tables."""

    __slots__ = ("mirrors", "insecure")

    def __init__(self, mirrors: tuple[str, ...] = (), insecure: bool = False):
        self.mirrors = mirrors
        self.insecure = insecure


class Config:
    """The parsed config file; empty when there is none."""

    __slots__ = ("registries", "path")

    def __init__(self, registries: dict[str, RegistryConfig] | None = None, path: Path | None = None):
        self.registries = {} if registries is None else registries
        self.path = path

    def registry(self, host: str) -> RegistryConfig:
        """Settings for ``host`` (defaults when it is not configured)."""
        return self.registries.get(host, RegistryConfig())


def default_root() -> Path:
    """``$OCITOOL_ROOT``, else /var/lib/ocitool for root, else the user's XDG data dir."""
    if env := os.environ.get("OCITOOL_ROOT"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/ocitool")
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "ocitool"


def find_config_file(explicit: str | None = None) -> Path | None:
    """The config file to read: ``--config``, ``$OCITOOL_CONFIG``, user's, then system's."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get("OCITOOL_CONFIG"):
        return Path(env)
    for candidate in (Path.home() / ".config" / "ocitool" / "config.toml",
                      Path("/etc/ocitool/config.toml")):
        if candidate.is_file():
            return candidate
    return None


def load_config(explicit: str | None = None) -> Config:
    """Read and validate the config file; a missing default file means an empty config."""
    path = find_config_file(explicit)
    if path is None:
        return Config()
    import tomllib  # ~3 ms to import: only when there is a file to parse
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    return Config(registries=_parse_registries(data.get("registries", {}), path), path=path)


def _parse_registries(table: object, path: Path) -> dict[str, RegistryConfig]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: 'registries' must be a table of registry hosts")
    result = {}
    for host, entry in table.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: registries.\"{host}\" must be a table")
        mirrors = entry.get("mirrors", [])
        insecure = entry.get("insecure", False)
        if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
            raise ConfigError(f"{path}: registries.\"{host}\".mirrors must be a list of hosts")
        if not isinstance(insecure, bool):
            raise ConfigError(f"{path}: registries.\"{host}\".insecure must be true or false")
        unknown = set(entry) - {"mirrors", "insecure"}
        if unknown:
            raise ConfigError(f"{path}: registries.\"{host}\" has unknown keys: {', '.join(sorted(unknown))}")
        result[host] = RegistryConfig(mirrors=tuple(mirrors), insecure=insecure)
    return result


def is_loopback_host(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1, with or without a port (Docker's default-insecure set)."""
    if host.startswith("["):
        hostname = host[1:host.find("]")] if "]" in host else host
    else:
        hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return hostname in LOOPBACK_HOSTS or hostname.startswith("127.")
