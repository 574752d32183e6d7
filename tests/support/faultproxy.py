"""An HTTP proxy in front of a registry that injects faults on demand.

Tests use it to check that ocitool resumes interrupted blob downloads with Range,
rejects corrupted blobs, honours 429/Retry-After and gives up on persistent errors,
all against the real registry behind it. Faults are plain attributes that a test may
set at any time; ``requests_seen`` records what the client sent as
``(method, path with query, case-insensitive headers)``.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from requests.structures import CaseInsensitiveDict

from .serving import LoopbackServer


CHUNK = 64 * 1024
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
              "te", "trailer", "trailers", "transfer-encoding", "upgrade"}


def _is_blob(path: str) -> bool:
    """Whether ``path`` addresses a blob (not an upload, which lives under /blobs/uploads/)."""
    return "/blobs/" in path and "/blobs/uploads/" not in path


class FaultProxy(LoopbackServer):
    """Forward every request to ``upstream_url``, applying whichever faults are set.

    * ``cut_blob_after = N``: the next 200 blob GET longer than N bytes sends the full Content-Length but only
      N body bytes, then the socket is closed. One-shot: the attribute resets to None.
    * ``flip_blob_bytes = True``: every blob body (200 or 206) has its middle byte flipped.
    * ``status_queue = [(status, headers), ...]``: the next blob/manifest requests are
      answered with these, in order, without reaching the upstream.
    * ``always_status = code``: every request is answered with this status.
    * ``redirect_blobs_to = base_url``: blob GETs get a 307 to ``base_url`` + the same path.
    * ``manifest_reply = (body, content_type)``: manifest GETs get this body instead
      (without a Docker-Content-Digest header): a registry that lies.
    * ``blob_delay = seconds``: sleep before each 64 KiB of a blob body (a slow link).
    """

    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.cut_blob_after: int | None = None
        self.flip_blob_bytes = False
        self.status_queue: list[tuple[int, dict[str, str]]] = []
        self.always_status: int | None = None
        self.redirect_blobs_to: str | None = None
        self.manifest_reply: tuple[bytes, str] | None = None
        self.blob_delay = 0.0
        self.requests_seen: list[tuple[str, str, CaseInsensitiveDict[str]]] = []
        self.lock = threading.Lock()
        self.host = ""
        self.url = ""

    def start(self) -> "FaultProxy":
        """Listen on a free loopback port in a background thread."""
        self.host = f"127.0.0.1:{self.serve(_proxy_handler(self))}"
        self.url = f"http://{self.host}"
        return self

    def take_canned_status(self, path: str) -> tuple[int, dict[str, str]] | None:
        """The fault status to answer ``path`` with instead of forwarding, if any."""
        with self.lock:
            if self.always_status is not None:
                return self.always_status, {}
            if self.status_queue and ("/blobs/" in path or "/manifests/" in path):
                return self.status_queue.pop(0)
        return None

    def take_cut(self, length: int) -> int | None:
        """Consume the one-shot ``cut_blob_after`` setting if a body of ``length`` is long enough to cut."""
        with self.lock:
            if self.cut_blob_after is None or self.cut_blob_after >= length:
                return None
            cut, self.cut_blob_after = self.cut_blob_after, None
        return cut


def _proxy_handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``proxy``'s upstream and fault settings."""
    upstream = urlsplit(proxy.upstream_url)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle_any(self) -> None:
            """Record the request, then answer with a canned status or forward it."""
            headers = CaseInsensitiveDict(dict(self.headers.items()))
            proxy.requests_seen.append((self.command, self.path, headers))
            body = self._read_body()
            path = urlsplit(self.path).path
            canned = proxy.take_canned_status(path)
            if canned is not None:
                self._send_canned(*canned)
            elif proxy.redirect_blobs_to and self.command == "GET" and _is_blob(path):
                self._send_bytes(307, b"", "text/plain", {"Location": proxy.redirect_blobs_to + self.path})
            elif proxy.manifest_reply and self.command == "GET" and "/manifests/" in path:
                self._send_bytes(200, *proxy.manifest_reply)
            else:
                self._forward(body)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any  # noqa: N815

        def _read_body(self) -> bytes:
            """The request body, whether sent with Content-Length or chunked."""
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                return self._read_chunked()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _read_chunked(self) -> bytes:
            """Decode a chunked request body."""
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)

        def _send_canned(self, status: int, headers: dict[str, str]) -> None:
            """Answer with ``status`` and a registry-style JSON error body."""
            data = json.dumps({"errors": [{"code": "FAULT", "message": f"injected {status}"}]}).encode()
            self._send_bytes(status, data, "application/json", headers)

        def _send_bytes(self, status: int, data: bytes, content_type: str,
                        headers: dict[str, str] | None = None) -> None:
            """Answer with ``status``, extra ``headers`` and ``data`` as the body."""
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _forward(self, body: bytes) -> None:
            """Send the request upstream and relay the response, applying blob faults."""
            conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
            try:
                conn.request(self.command, self.path, body=body, headers=self._upstream_headers(body))
                response = conn.getresponse()
                self._relay(response)
            finally:
                conn.close()

        def _upstream_headers(self, body: bytes) -> dict[str, str]:
            """The client's headers minus hop-by-hop ones, with Host rewritten."""
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in HOP_BY_HOP and k.lower() not in ("host", "content-length")}
            headers["Host"] = upstream.netloc
            if body or self.command in ("POST", "PUT", "PATCH"):
                headers["Content-Length"] = str(len(body))
            return headers

        def _relay(self, response: http.client.HTTPResponse) -> None:
            """Copy status, headers and (streamed) body back to the client."""
            is_blob_get = self.command == "GET" and _is_blob(urlsplit(self.path).path)
            length = response.getheader("Content-Length")
            cut = proxy.take_cut(int(length or 0)) if is_blob_get and response.status == 200 else None
            flip = is_blob_get and response.status in (200, 206) and proxy.flip_blob_bytes
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, self._rewrite(key, value))
            if length is None:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self._copy_body(response, int(length) if length else None, cut, flip)

        def _rewrite(self, key: str, value: str) -> str:
            """Point absolute upload Locations back at the proxy instead of the upstream."""
            if key.lower() == "location" and value.startswith(proxy.upstream_url):
                return proxy.url + value[len(proxy.upstream_url):]
            return value

        def _copy_body(self, response: http.client.HTTPResponse, length: int | None,
                       cut: int | None, flip: bool) -> None:
            """Stream the body, flipping the middle byte or cutting the connection if asked."""
            middle = length // 2 if flip and length else None
            sent = 0
            delay = proxy.blob_delay if self.command == "GET" and _is_blob(urlsplit(self.path).path) else 0.0
            while chunk := response.read(CHUNK):
                time.sleep(delay)
                if middle is not None and sent <= middle < sent + len(chunk):
                    i = middle - sent
                    chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1:]
                if cut is not None and sent + len(chunk) >= cut:
                    self.wfile.write(chunk[:cut - sent])
                    self._hang_up()
                    return
                self.wfile.write(chunk)
                sent += len(chunk)

        def _hang_up(self) -> None:
            """Close the client connection mid-body, as a network failure would."""
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Keep test output quiet."""

    return Handler
