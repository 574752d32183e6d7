"""Logging without loading the ``logging`` package on the command lines' paths.

Importing ``logging`` costs ~8 ms, a large share of a runtime command that runs in a few
tens of milliseconds. A command line therefore :func:`configure`\\ s a threshold and a
*sink* that writes its messages (stderr, runc's ``--log`` file); without one (ocitool
used as a library, or under pytest) records go to the standard logger of the module's
name, so handlers and ``caplog`` see them as usual.
"""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from collections.abc import Callable

    Sink = Callable[[int, str], None]  # writes one formatted message of the given level

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
LEVEL_NAMES = {DEBUG: "debug", INFO: "info", WARNING: "warning", ERROR: "error"}

_threshold = 0
_sink: Sink | None = None


def configure(threshold: int, sink: Sink) -> None:
    """Send messages at ``threshold`` or above to ``sink``; drop the others."""
    global _threshold, _sink
    _threshold, _sink = threshold, sink


def stderr_sink(prog: str) -> Sink:
    """``<prog>: <level>: <message>`` lines on stderr."""
    return lambda level, message: print(f"{prog}: {LEVEL_NAMES[level]}: {message}", file=sys.stderr, flush=True)


def utc_timestamp() -> str:
    """Now in RFC 3339 UTC with microseconds: runc's log and ``created`` format, without ``datetime``."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def shutdown() -> None:
    """Flush the standard logging handlers, if anything went through them."""
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()


class Logger:
    """The subset of :class:`logging.Logger` ocitool uses (%-style arguments)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def log(self, level: int, message: str, *args: object) -> None:
        """Emit ``message % args`` at ``level``."""
        if level < _threshold:
            return
        if _sink is not None:
            _sink(level, message % args if args else message)
            return
        import logging
        logging.getLogger(self.name).log(level, message, *args)

    def debug(self, message: str, *args: object) -> None:
        self.log(DEBUG, message, *args)

    def info(self, message: str, *args: object) -> None:
        self.log(INFO, message, *args)

    def warning(self, message: str, *args: object) -> None:
        self.log(WARNING, message, *args)

    def error(self, message: str, *args: object) -> None:
        self.log(ERROR, message, *args)


def get_logger(name: str) -> Logger:
    """The logger for module ``name``."""
    return Logger(name)
