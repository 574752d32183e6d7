"""Rendering download progress: live bars on a terminal, plain lines in logs, or nothing."""

from __future__ import annotations

import sys
import threading
import time

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from typing import Protocol, TextIO

    class Progress(Protocol):
        """Receives download events; the CLI renders them (bars, lines or nothing)."""

        def start(self, digest: str, size: int, kind: str) -> None: ...
        def advance(self, digest: str, nbytes: int) -> None: ...
        def finish(self, digest: str, note: str) -> None: ...


class NoProgress:
    """Progress that shows nothing."""

    def start(self, digest: str, size: int, kind: str) -> None: pass
    def advance(self, digest: str, nbytes: int) -> None: pass
    def finish(self, digest: str, note: str) -> None: pass


def human_size(nbytes: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(nbytes) < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def _short(digest: str) -> str:
    return digest.partition(":")[2][:12]


class LineProgress:
    """One line when a blob starts and one when it ends: for pipes and CI logs."""

    def __init__(self, stream: TextIO = sys.stderr):
        self._stream = stream
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}

    def start(self, digest: str, size: int, kind: str) -> None:
        self._sizes[digest] = size

    def advance(self, digest: str, nbytes: int) -> None:
        pass

    def finish(self, digest: str, note: str) -> None:
        with self._lock:
            print(f"Copying blob {_short(digest)} {human_size(self._sizes.get(digest, 0))}: {note}",
                  file=self._stream, flush=True)


class TerminalProgress:
    """A bar per blob, redrawn in place at most ten times a second."""

    WIDTH = 30

    def __init__(self, stream: TextIO = sys.stderr):
        self._stream = stream
        self._lock = threading.Lock()
        self._rows: dict[str, list] = {}   # digest -> [size, done, note]
        self._drawn = 0
        self._last = 0.0

    def start(self, digest: str, size: int, kind: str) -> None:
        with self._lock:
            self._rows.setdefault(digest, [size, 0, ""])
            self._draw(force=True)

    def advance(self, digest: str, nbytes: int) -> None:
        with self._lock:
            self._rows[digest][1] += nbytes
            self._draw()

    def finish(self, digest: str, note: str) -> None:
        with self._lock:
            row = self._rows[digest]
            row[1], row[2] = row[0], note
            self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        out = [f"\x1b[{self._drawn}F"] if self._drawn else []
        for digest, (size, done, note) in self._rows.items():
            filled = int(self.WIDTH * done / size) if size else self.WIDTH
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            status = note or f"{human_size(done)} / {human_size(size)}"
            out.append(f"\x1b[2K{_short(digest)} [{bar}] {status}\n")
        self._stream.write("".join(out))
        self._stream.flush()
        self._drawn = len(self._rows)
