"""OCI hooks (runtime-spec config.md "POSIX-platform Hooks"): run with the state on stdin."""

from __future__ import annotations


from ocitool import cjson
from ocitool.errors import OcitoolError
from ocitool.log import get_logger

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from typing import Any

log = get_logger(__name__)


class HookError(OcitoolError):
    """A hook failed, timed out or could not be started."""


def run_hooks(spec: dict[str, Any], stage: str, state: dict[str, Any], *, fatal: bool = True) -> None:
    """Run every ``hooks.<stage>`` entry in order with ``state`` as JSON on stdin.

    A failing hook aborts the lifecycle step (``fatal``), except where the spec says
    failures are only logged (poststart, poststop).
    """
    for index, hook in enumerate((spec.get("hooks") or {}).get(stage) or []):
        try:
            _run_one(hook, state)
        except HookError as exc:
            message = f"hooks.{stage}[{index}] ({hook['path']}): {exc}"
            if fatal:
                raise HookError(message) from None
            log.warning("%s", message)


def load_for_container(spec: dict[str, Any]) -> None:
    """Import what hooks need before pivot_root hides the host's standard library: the
    startContainer hooks run after it."""
    if (spec.get("hooks") or {}).get("startContainer"):
        import subprocess  # noqa: F401


def _run_one(hook: dict[str, Any], state: dict[str, Any]) -> None:
    import subprocess  # ~4 ms to import: only when a hook actually runs

    args = hook.get("args") or [hook["path"]]
    try:
        result = subprocess.run(args, executable=hook["path"], input=cjson.dumps(state).encode(),
                                env=_env(hook.get("env")), capture_output=True, timeout=hook.get("timeout"),
                                close_fds=True)
    except subprocess.TimeoutExpired:
        raise HookError(f"timed out after {hook['timeout']} s") from None
    except OSError as exc:
        raise HookError(f"cannot run: {exc.strerror}") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()
        raise HookError(f"exited {result.returncode}" + (f": {detail[-1]}" if detail else ""))


def _env(entries: list[str] | None) -> dict[str, str]:
    return dict(item.split("=", 1) for item in entries or [])
