"""The message channel between the runtime and the container's init while it is set up.

A SOCK_SEQPACKET socketpair carries one JSON object per message, and file descriptors
(the pty master) with SCM_RIGHTS. An ``error`` message from the other side becomes an
OcitoolError here, so a failure inside the container reaches the user as one line.
"""

from __future__ import annotations

import _socket  # the C module: socket.py's enum set-up would cost a runtime command ~4 ms
import struct

from ocitool import cjson
from ocitool.errors import OcitoolError

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from typing import Any

MAX_MESSAGE = 1 << 20
MAX_FDS = 4


class InitError(OcitoolError):
    """The container's init failed; ``exit_code`` is 126/127 when the command could not be executed."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code  # shadows OcitoolError.exit_code


class Channel:
    """One end of the runtime <-> init channel."""

    def __init__(self, sock: _socket.socket):
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple["Channel", "Channel"]:
        """Two connected ends: (runtime side, init side)."""
        left, right = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        return cls(left), cls(right)

    def send(self, kind: str, fds: list[int] | None = None, **data: Any) -> None:
        """Send a ``kind`` message with ``data`` (and file descriptors)."""
        payload = cjson.dumps({"kind": kind, **data}).encode()
        rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
        self.sock.sendmsg([payload], rights)

    def receive(self, expected: str, timeout: float | None = 60) -> tuple[dict[str, Any], list[int]]:
        """The next message, which must be ``expected``; an ``error`` message is raised."""
        self.sock.settimeout(timeout)
        try:
            payload, ancillary, _, _ = self.sock.recvmsg(MAX_MESSAGE, _socket.CMSG_SPACE(MAX_FDS * 4),
                                                         _socket.MSG_CMSG_CLOEXEC)
        except TimeoutError:
            raise OcitoolError(f"container init did not answer in time (waiting for {expected})") from None
        finally:
            self.sock.settimeout(None)
        fds = _received_fds(ancillary)
        if not payload:
            raise OcitoolError(f"container init exited unexpectedly (waiting for {expected})")
        message = cjson.loads(payload)
        if message["kind"] == "error":
            raise InitError(message["message"], message.get("exit_code", 1))
        if message["kind"] != expected:
            raise OcitoolError(f"container init sent {message['kind']!r}, expected {expected!r}")
        return message, fds

    def close(self) -> None:
        self.sock.close()


def _received_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds.extend(struct.unpack(f"{len(data) // 4}i", data[:len(data) - len(data) % 4]))
    return fds
