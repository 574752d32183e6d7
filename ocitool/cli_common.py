"""What both command lines (``ocitool`` and ``ocitool-runtime``) do around click: one-line
errors with the right exit status, tracebacks only when debugging, and a fast exit."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable

import click

from ocitool.errors import OcitoolError

Report = Callable[[str], None]


def run_command_line(group: click.Group, args: list[str], prog_name: str, report: Report, debug: bool,
                     usage_status: Callable[[click.UsageError], int] = lambda exc: 2) -> None:
    """Run ``group`` on ``args``; failures become one ``report``ed line and an exit status."""
    try:
        code = group.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        _fail(report, exc.format_message() + hint, usage_status(exc))
    except click.ClickException as exc:
        _fail(report, exc.format_message(), exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        _fail(report, "interrupted", 130)
    except OcitoolError as exc:
        if debug:
            traceback.print_exc()
        _fail(report, str(exc), exc.exit_code)
    except Exception as exc:  # a bug: one line unless debugging
        if debug:
            traceback.print_exc()
        _fail(report, f"internal error: {exc.__class__.__name__}: {exc} (debug logging shows the traceback)", 1)
    fast_exit(code if isinstance(code, int) else 0)


def _fail(report: Report, message: str, code: int) -> None:
    report(message)
    fast_exit(code)


def fast_exit(code: int) -> None:
    """Flush and leave without the interpreter's teardown (~20 ms of garbage collection per command)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
