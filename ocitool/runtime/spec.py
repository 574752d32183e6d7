"""Loading a bundle's config.json and checking the fields the runtime relies on.

A broken or hostile config gets an error that names the field
(``config.json: process.args: must be a non-empty list of strings``) before anything
is created, so a failed ``create`` leaves no state, cgroup or mount behind.
"""

from __future__ import annotations

import os

from ocitool import cjson
from ocitool.errors import OcitoolError

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from typing import Any

CONFIG_NAME = "config.json"


class SpecError(OcitoolError):
    """config.json is missing, not JSON, or has a field of the wrong shape."""


def load_spec(bundle: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``bundle/config.json``."""
    bundle = os.fspath(bundle)
    path = os.path.join(bundle, CONFIG_NAME)
    try:
        with open(path, "rb") as file:
            spec = cjson.loads(file.read())
    except FileNotFoundError:
        raise SpecError(f"{path} does not exist (is {bundle} a bundle?)") from None
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise SpecError(f"{path} is not valid JSON: {exc}") from None
    validate_spec(spec)
    return spec


def validate_spec(spec: Any) -> None:
    """Raise SpecError naming the first field the runtime cannot use."""
    _require(isinstance(spec, dict), "", "must be a JSON object")
    _require(isinstance(spec.get("ociVersion"), str), "ociVersion", "must be a string")
    root = spec.get("root")
    _require(isinstance(root, dict) and isinstance(root.get("path"), str) and root["path"], "root.path",
             "must be a non-empty string")
    _require(isinstance(root.get("readonly", False), bool), "root.readonly", "must be true or false")
    process = spec.get("process")
    _require(isinstance(process, dict), "process", "must be an object (the container needs a process)")
    validate_process(process, "process")
    _validate_mounts(spec.get("mounts", []))
    _validate_hooks(spec.get("hooks", {}))
    _require(isinstance(spec.get("hostname", ""), str), "hostname", "must be a string")
    _require(isinstance(spec.get("linux", {}), dict), "linux", "must be an object")
    _require(isinstance(spec.get("annotations", {}), dict), "annotations", "must be an object")


def validate_process(process: Any, where: str) -> None:
    """Check a ``process`` object (from config.json or ``exec --process``)."""
    _require(isinstance(process, dict), where, "must be an object")
    _require(_strings(process.get("args")) and process["args"], f"{where}.args",
             "must be a non-empty list of strings")
    _require(isinstance(process.get("cwd"), str) and process["cwd"].startswith("/"), f"{where}.cwd",
             "must be an absolute path")
    env = process.get("env", [])
    _require(_strings(env) and all("=" in item for item in env), f"{where}.env",
             "must be a list of KEY=VALUE strings")
    user = process.get("user", {})
    _require(isinstance(user, dict), f"{where}.user", "must be an object")
    for key in ("uid", "gid"):
        _require(_uint(user.get(key, 0)), f"{where}.user.{key}", "must be a non-negative integer")
    _require(isinstance(user.get("additionalGids", []), list) and all(map(_uint, user.get("additionalGids", []))),
             f"{where}.user.additionalGids", "must be a list of non-negative integers")
    _require(_uint(process.get("user", {}).get("umask", 0)), f"{where}.user.umask", "must be an integer")
    for index, rlimit in enumerate(process.get("rlimits", [])):
        _require(isinstance(rlimit, dict) and isinstance(rlimit.get("type"), str)
                 and _uint(rlimit.get("hard")) and _uint(rlimit.get("soft")),
                 f"{where}.rlimits[{index}]", "must have a type and integer soft and hard limits")
    _require(isinstance(process.get("terminal", False), bool), f"{where}.terminal", "must be true or false")
    _require(isinstance(process.get("noNewPrivileges", False), bool), f"{where}.noNewPrivileges",
             "must be true or false")


def _validate_mounts(mounts: Any) -> None:
    _require(isinstance(mounts, list), "mounts", "must be a list")
    for index, mount in enumerate(mounts):
        where = f"mounts[{index}]"
        _require(isinstance(mount, dict), where, "must be an object")
        _require(isinstance(mount.get("destination"), str) and mount["destination"].startswith("/"),
                 f"{where}.destination", "must be an absolute path")
        _require(_strings(mount.get("options", [])), f"{where}.options", "must be a list of strings")


def _validate_hooks(hooks: Any) -> None:
    _require(isinstance(hooks, dict), "hooks", "must be an object")
    for stage, entries in hooks.items():
        _require(isinstance(entries, list), f"hooks.{stage}", "must be a list")
        for index, hook in enumerate(entries):
            where = f"hooks.{stage}[{index}]"
            _require(isinstance(hook, dict) and isinstance(hook.get("path"), str) and hook["path"].startswith("/"),
                     f"{where}.path", "must be an absolute path")
            _require(_strings(hook.get("args", [])) and _strings(hook.get("env", [])), where,
                     "args and env must be lists of strings")
            timeout = hook.get("timeout")
            _require(timeout is None or (isinstance(timeout, int) and timeout > 0), f"{where}.timeout",
                     "must be a positive integer")


def _require(condition: Any, field: str, problem: str) -> None:
    if not condition:
        raise SpecError(f"config.json: {field or 'document'}: {problem}")


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
