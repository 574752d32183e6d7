"""A base for the tests' small HTTP servers: one ``ThreadingHTTPServer`` on a free loopback port,
served by a daemon thread, usable as a context manager."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class LoopbackServer:
    """Subclasses define ``start`` (calling :meth:`serve` with their handler class) and may extend
    ``stop``; open connections die with their daemon threads."""

    _httpd: ThreadingHTTPServer | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> int:
        """Listen on a free loopback port, answer with ``handler`` in the background; return the port."""
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self._httpd.server_address[1]

    def stop(self) -> None:
        """Stop listening."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
