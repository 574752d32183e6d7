"""Where ocitool keeps its state and what the user configured (CONTRACT.md, "Global options").

Shared by every stage: the state root holds the image store and later the rootfs cache,
and the TOML config says which registries are insecure and which mirrors to try.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ocitool.errors import ConfigError

TYPE_CHECKING = False  # type checkers treat this as True; this import serves annotations only
if TYPE_CHECKING:
    from typing import Any

LOOPBACK_HOSTS = ("localhost", "::1", "[::1]")

# The TOML that ocitool's config needs, one construct per line: [table."headers"] and keys set
# to a "string", true/false or ["string", ...]; strings without escapes, TOML's whitespace
# (space, tab) and comments (no control characters but tab). Regular expressions, compiled
# (and cached by re) only when there is a file to read; re itself is loaded anyway (pathlib).
_STRING = r'"[^"\\\x00-\x08\x0a-\x1f\x7f]*"'
_KEY = rf"(?:[A-Za-z0-9_-]+|{_STRING})"
_END = r"[ \t]*(?:#[^\x00-\x08\x0a-\x1f\x7f]*)?"
_TABLE_LINE = rf"\[[ \t]*({_KEY}(?:[ \t]*\.[ \t]*{_KEY})*)[ \t]*\]{_END}"
_PAIR_LINE = (rf"({_KEY})[ \t]*=[ \t]*({_STRING}|true|false|\[[ \t]*(?:{_STRING}[ \t]*,[ \t]*)*"
              rf"(?:{_STRING}[ \t]*)?\]){_END}")


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
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    data = read_simple_toml(text)
    if data is None:  # TOML beyond what the config needs, or not TOML at all: the real parser decides
        import tomllib  # ~8 ms to import
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
    return Config(registries=_parse_registries(data.get("registries", {}), path), path=path)


def read_simple_toml(text: str) -> dict[str, Any] | None:
    """``tomllib.loads(text)`` for a file written with only what the config needs (see _PAIR_LINE),
    None for anything else, valid TOML or not, which is then left to tomllib.

    Importing tomllib (with typing, datetime and string) costs ~8 ms, a tenth of a cold
    ``ocitool run``, for a file of a few lines.
    """
    document: dict[str, Any] = {}
    table, defined = document, set()
    for line in text.removesuffix("\n").split("\n"):
        line = line.removesuffix("\r").strip(" \t")
        if re.fullmatch(_END, line):  # blank, or a comment
            continue
        if header := re.fullmatch(_TABLE_LINE, line):
            path = tuple(_key(part) for part in re.findall(_KEY, header[1]))
            table = _open_table(document, path)
            if table is None or path in defined:
                return None
            defined.add(path)
        elif pair := re.fullmatch(_PAIR_LINE, line):
            key = _key(pair[1])
            if key in table:
                return None
            table[key] = _value(pair[2])
        else:
            return None
    return document


def _key(text: str) -> str:
    return text[1:-1] if text.startswith('"') else text


def _value(text: str) -> str | bool | list[str]:
    if text.startswith("["):
        return [item[1:-1] for item in re.findall(_STRING, text)]
    return text == "true" if text in ("true", "false") else text[1:-1]


def _open_table(document: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    """The table at ``path``, made with its parents if need be; None if a value is in the way."""
    table = document
    for name in path:
        table = table.setdefault(name, {})
        if not isinstance(table, dict):
            return None
    return table


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
