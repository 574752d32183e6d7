"""Terminals: the container's pty, handing its master to a console socket, and relaying it.

With ``process.terminal`` the container gets a pty made inside its own devpts; the master
goes to whoever asked: over ``--console-socket`` with SCM_RIGHTS (conmon, containerd), or
to the foreground ``run`` which wires it to the caller's terminal, window size included.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import sys
import termios
import tty
from collections.abc import Iterator

from ocitool.errors import OcitoolError


def open_pty() -> tuple[int, int]:
    """(master, slave) of a new pty from the current /dev/ptmx (the container's, after pivot)."""
    master, slave = os.openpty()
    os.set_inheritable(master, False)
    return master, slave


def make_controlling_terminal(slave: int) -> None:
    """Make ``slave`` this new session's controlling terminal and the process's stdio."""
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for target in (0, 1, 2):
        os.dup2(slave, target)
    if slave > 2:
        os.close(slave)


def send_to_console_socket(path: str, master: int) -> None:
    """Hand the pty master to the process listening on the unix socket ``path``."""
    import socket  # ~4 ms to import: only with --console-socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            socket.send_fds(sock, [b"/dev/ptmx"], [master])
    except OSError as exc:
        raise OcitoolError(f"cannot send the terminal to console socket {path}: {exc.strerror or exc}") from None


def copy_window_size(source: int, target: int) -> None:
    """Give ``target`` the window size of the terminal ``source``, if it is one."""
    with contextlib.suppress(OSError):
        fcntl.ioctl(target, termios.TIOCSWINSZ, fcntl.ioctl(source, termios.TIOCGWINSZ, b"\0" * 8))


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Put the caller's terminal in raw mode (keys go to the container) and restore it after."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def relay(master: int, stdin: int = 0, stdout: int = 1) -> None:
    """Copy the caller's stdin to the container's pty and its output back, until it closes."""
    copy_window_size(stdin, master)
    previous = signal.signal(signal.SIGWINCH, lambda *_: copy_window_size(stdin, master))
    sources = [master, stdin]
    try:
        with raw_terminal(stdin):
            while master in sources:
                ready, _, _ = _select(sources)
                for fd in ready:
                    if not _pump(fd, master if fd == stdin else stdout):
                        sources.remove(fd)
    finally:
        signal.signal(signal.SIGWINCH, previous)
        sys.stdout.flush()


def _select(fds: list[int]) -> tuple[list[int], list[int], list[int]]:
    while True:
        try:
            return select.select(fds, [], [])
        except InterruptedError:
            continue


def _pump(source: int, target: int) -> bool:
    """Move one chunk; False at end of input (EIO is how a pty master says the slave closed)."""
    try:
        data = os.read(source, 65536)
    except OSError:
        return False
    if not data:
        return False
    while data:
        data = data[os.write(target, data):]
    return True
