"""The message channel between the runtime and the container's init while it is set up.

A SOCK_SEQPACKET socketpair carries one JSON object per message, and file descriptors
(the pty master) with SCM_RIGHTS. An ``error`` message from the other side becomes an
OcitoolError here, so a failure inside the container reaches the user as one line.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from ocitool.errors import OcitoolError

MAX_MESSAGE = 1 << 20


class InitError(OcitoolError):
    """The container's init failed; ``exit_code`` is 126/127 when the command could not be executed."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code  # shadows OcitoolError.exit_code


class Channel:
    """One end of the runtime <-> init channel."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple["Channel", "Channel"]:
        """Two connected ends: (runtime side, init side)."""
        left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return cls(left), cls(right)

    def send(self, kind: str, fds: list[int] | None = None, **data: Any) -> None:
        """Send a ``kind`` message with ``data`` (and file descriptors)."""
        payload = json.dumps({"kind": kind, **data}).encode()
        if fds:
            socket.send_fds(self.sock, [payload], fds)
        else:
            self.sock.sendall(payload)

    def receive(self, expected: str, timeout: float | None = 60) -> tuple[dict[str, Any], list[int]]:
        """The next message, which must be ``expected``; an ``error`` message is raised."""
        self.sock.settimeout(timeout)
        try:
            payload, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 4)
        except TimeoutError:
            raise OcitoolError(f"container init did not answer in time (waiting for {expected})") from None
        finally:
            self.sock.settimeout(None)
        if not payload:
            raise OcitoolError(f"container init exited unexpectedly (waiting for {expected})")
        message = json.loads(payload)
        if message["kind"] == "error":
            raise InitError(message["message"], message.get("exit_code", 1))
        if message["kind"] != expected:
            raise OcitoolError(f"container init sent {message['kind']!r}, expected {expected!r}")
        return message, fds

    def close(self) -> None:
        self.sock.close()
