"""What both command lines (``ocitool`` and ``ocitool-runtime``) do around their parsers
(:mod:`ocitool.cli_flags`): one-line errors with the right exit status, tracebacks only when
debugging, and a fast exit."""

from __future__ import annotations

import os
import sys

from ocitool import log
from ocitool.errors import OcitoolError

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

    Report = Callable[[str], None]  # says one line of error


def run_guarded(command: Callable[[], int | None], report: Report, debug: bool) -> NoReturn:
    """Run ``command`` and exit with its status; a failure becomes one ``report``\\ ed line."""
    try:
        code = command()
    except KeyboardInterrupt:
        _fail(report, "interrupted", 130)
    except OcitoolError as exc:
        _print_traceback(debug)
        _fail(report, str(exc), exc.exit_code)
    except Exception as exc:  # a bug: one line unless debugging
        _print_traceback(debug)
        _fail(report, f"internal error: {exc.__class__.__name__}: {exc} (debug logging shows the traceback)", 1)
    fast_exit(code if isinstance(code, int) else 0)


def _print_traceback(debug: bool) -> None:
    if debug:
        import traceback
        traceback.print_exc()


def _fail(report: Report, message: str, code: int) -> NoReturn:
    report(message)
    fast_exit(code)


def fast_exit(code: int) -> NoReturn:
    """Flush and leave without the interpreter's teardown (~20 ms of garbage collection per command)."""
    log.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
