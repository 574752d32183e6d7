"""ocitool's own HTTP/1.1 client (ocitool.image.httpclient) over real sockets.

Framing, keep-alive and error handling are checked against ``ScriptedServer``, a raw socket
server that answers with exactly the bytes a test scripts, so every corner of the protocol can
be produced on demand. TLS runs against the session's self-signed registry (``tls_registry``),
proxies through ``support.httpproxy.HTTPProxy``. Loopback targets never use a proxy, so proxied
requests name ``TARGET``, which only the test proxy resolves (to 127.0.0.1).
"""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from ocitool.image.httpclient import URL, Client, Headers, HTTPError, ProxyError, TLSError, proxy_for
from support.httpproxy import HTTPProxy
from support.registry import RegistryServer

TARGET = "ocitool-proxy-test.invalid"  # .invalid never resolves (RFC 6761): only the test proxy knows it
ENVIRONMENT = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY",
               "SSL_CERT_FILE", "SSL_CERT_DIR")


# -- a server that answers with scripted bytes ------------------------------------------------

@dataclass(frozen=True)
class Reply:
    """Bytes to send for one request, then what to do with the connection: ``"keep"`` it for the
    next request, ``"close"`` it, or ``"shut_wr"``: end our direction but keep reading, so that a
    request the client should not have sent on it still shows up in ``ScriptedServer.seen``."""

    data: bytes
    then: str = "keep"


@dataclass(frozen=True)
class Seen:
    """One request head as the server read it (``connection`` counts accepts from 1)."""

    connection: int
    line: str
    headers: dict[str, str]  # lower-cased names


class ScriptedServer:
    """A raw HTTP server on a free loopback port answering each request with the next reply.

    The script is shared by all connections, in order; once it runs out, connections are closed.
    """

    def __init__(self, *script: bytes | Reply) -> None:
        self.script = [reply if isinstance(reply, Reply) else Reply(reply) for reply in script]
        self.seen: list[Seen] = []
        self.accepts = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    def wait_closed(self, timeout: float = 5.0) -> None:
        """Wait until every connection has ended, i.e. the client closed them all."""
        for thread in list(self._threads):
            thread.join(timeout)
            assert not thread.is_alive(), "the client left a connection open"

    def stop(self) -> None:
        """Close the listener and every connection."""
        for sock in [self._listener, *self._sockets]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._acceptor.join(5)

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepts += 1
                number = self.accepts
            self._sockets.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock, number), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        buffer, replying = b"", True
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                self.seen.append(_parse_head(number, head))
                if not replying:
                    continue
                with self._lock:
                    reply = self.script.pop(0) if self.script else Reply(b"", "close")
                sock.sendall(reply.data)
                if reply.then == "close":
                    return
                if reply.then == "shut_wr":
                    sock.shutdown(socket.SHUT_WR)
                    replying = False
        except OSError:
            pass
        finally:
            sock.close()


def _parse_head(connection: int, head: bytes) -> Seen:
    line, *fields = head.decode("latin-1").split("\r\n")
    headers = {}
    for field in fields:
        name, _, value = field.partition(":")
        headers[name.lower()] = value.strip()
    return Seen(connection, line, headers)


def answer(body: bytes = b"hello", *fields: str, status: str = "200 OK") -> bytes:
    """A complete answer framed by Content-Length, with extra header ``fields``."""
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *fields]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def head_only(status: str = "200 OK", *fields: str) -> bytes:
    """A status line and header fields, without a body or a Content-Length of its own."""
    return ("\r\n".join([f"HTTP/1.1 {status}", *fields]) + "\r\n\r\n").encode()


CHUNKED = "Transfer-Encoding: chunked"


# -- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy or CA variables from the caller's environment: each test sets what it needs."""
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    """Start a ScriptedServer for a script; all are stopped after the test."""
    servers: list[ScriptedServer] = []

    def start(*script: bytes | Reply) -> ScriptedServer:
        servers.append(ScriptedServer(*script))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def client() -> Iterator[Client]:
    """A fresh client with short timeouts, so that a client waiting for bytes that never come fails fast."""
    http = Client(timeout=(5.0, 3.0))
    yield http
    http.close()


@pytest.fixture
def proxy() -> Iterator[HTTPProxy]:
    """A proxy that resolves TARGET to 127.0.0.1."""
    with HTTPProxy(hosts={TARGET: "127.0.0.1"}) as running:
        yield running


def get(client: Client, url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Status and whole body of a GET."""
    response = client.request("GET", url, headers)
    return response.status_code, response.content


def connections(server: ScriptedServer) -> list[int]:
    """The connection each request arrived on, in order."""
    return [seen.connection for seen in server.seen]


# -- bodies ------------------------------------------------------------------------------------

def test_content_length_body_and_the_request_sent(serve, client):
    server = serve(answer(b"hello", "Content-Type: text/plain"))
    response = client.request("GET", f"{server.url}/v2/x/manifests/latest?n=1#fragment", {"Accept": "a/b"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain"
    assert response.content == b"hello"
    [seen] = server.seen
    assert seen.line == "GET /v2/x/manifests/latest?n=1 HTTP/1.1"
    assert seen.headers["host"] == f"127.0.0.1:{server.port}"
    assert seen.headers["accept"] == "a/b"
    assert seen.headers["accept-encoding"] == "identity"


def test_chunked_body_with_extensions_and_trailers_keeps_the_connection_in_step(serve, client):
    body = (b"5;name=value\r\nhello\r\n"
            b"7 ; quoted=\"a;b\"\r\n, world\r\n"
            b"0;last\r\nTrailer-One: 1\r\nTrailer-Two: 2\r\n\r\n")
    server = serve(head_only("200 OK", CHUNKED) + body, answer(b"next"))
    response = client.request("GET", server.url + "/chunked")
    pieces = list(response.iter_content(4))
    assert b"".join(pieces) == b"hello, world"
    assert max(map(len, pieces)) <= 4
    assert get(client, server.url + "/after") == (200, b"next")  # trailers were consumed
    assert connections(server) == [1, 1]


def test_body_read_until_close(serve, client):
    server = serve(Reply(head_only("200 OK", "Content-Type: text/plain") + b"all of it", "shut_wr"),
                   answer(b"next"))
    assert get(client, server.url) == (200, b"all of it")
    assert get(client, server.url) == (200, b"next")
    client.close()
    server.wait_closed()
    assert connections(server) == [1, 2]  # the ended connection carried nothing more


def test_transfer_encoding_overrides_content_length(serve, client):
    chunked = head_only("200 OK", "Content-Length: 3", CHUNKED) + b"5\r\nhello\r\n0\r\n\r\n"
    server = serve(chunked, answer(b"next"))
    assert get(client, server.url) == (200, b"hello")
    assert get(client, server.url) == (200, b"next")
    assert connections(server) == [1, 1]


@pytest.mark.parametrize("method, head", [
    ("GET", head_only("204 No Content")),
    ("HEAD", head_only("200 OK", "Content-Length: 100")),
    ("HEAD", head_only("200 OK", CHUNKED)),
    ("GET", head_only("304 Not Modified", "Content-Length: 100")),
])
def test_answers_without_a_body(serve, client, method, head):
    """No body is read, so the next answer on the same connection is read as an answer."""
    server = serve(head, answer(b"next"))
    response = client.request(method, server.url)
    assert response.content == b""
    assert get(client, server.url) == (200, b"next")
    assert connections(server) == [1, 1]


def test_interim_answers_are_skipped(serve, client):
    interim = head_only("100 Continue") + head_only("103 Early Hints", "Link: </style.css>; rel=preload")
    server = serve(interim + answer(b"final", "X-Final: yes"))
    response = client.request("GET", server.url)
    assert (response.status_code, response.headers.get("X-Final"), response.content) == (200, "yes", b"final")
    assert "Link" not in response.headers


@pytest.mark.parametrize("cut", [
    head_only("200 OK", "Content-Length: 10") + b"abc",
    head_only("200 OK", CHUNKED) + b"a\r\nabc",
], ids=["content-length", "chunked"])
def test_body_cut_short_raises_and_costs_the_connection(serve, client, cut):
    server = serve(Reply(cut, "shut_wr"), answer(b"next"))
    response = client.request("GET", server.url)
    with pytest.raises(HTTPError, match="ended early"):
        response.content
    assert get(client, server.url) == (200, b"next")
    client.close()
    server.wait_closed()
    assert connections(server) == [1, 2]  # nothing more was sent on the broken connection


def test_connection_closed_before_an_answer(serve, client):
    server = serve(Reply(b"", "close"))
    with pytest.raises(HTTPError, match="closed without an answer"):
        client.request("GET", server.url)
    assert server.accepts == 1  # a fresh connection that fails is not retried


def test_unread_body_on_close(serve, client):
    """``close`` drains a short Content-Length body so that the connection carries on; an unread
    chunked body costs the connection (its rest would otherwise be read as the next answer)."""
    chunked = head_only("200 OK", CHUNKED) + b"5\r\nhello\r\n0\r\n\r\n"
    server = serve(answer(b"short"), answer(b"second"), chunked, answer(b"fourth"))
    client.request("GET", server.url).close()
    assert get(client, server.url) == (200, b"second")
    client.request("GET", server.url).close()
    assert get(client, server.url) == (200, b"fourth")
    assert connections(server) == [1, 1, 1, 2]


# -- keep-alive ----------------------------------------------------------------------------------

def test_keep_alive_reuses_one_connection(serve, client):
    server = serve(answer(b"one"), answer(b"two"), answer(b"three"))
    assert [get(client, f"{server.url}/{n}")[1] for n in range(3)] == [b"one", b"two", b"three"]
    assert server.accepts == 1
    assert [seen.line for seen in server.seen] == [f"GET /{n} HTTP/1.1" for n in range(3)]


def test_kept_alive_connection_closed_by_the_server_is_replaced(serve, client):
    server = serve(Reply(answer(b"first"), "close"), answer(b"second"))
    assert get(client, server.url) == (200, b"first")
    assert get(client, server.url) == (200, b"second")
    assert server.accepts == 2


@pytest.mark.parametrize("field", ["Connection: close", "connection: Close"])
def test_connection_close_is_not_reused(serve, client, field):
    server = serve(answer(b"first", field), answer(b"second"))  # the server would answer again
    assert get(client, server.url) == (200, b"first")
    assert get(client, server.url) == (200, b"second")
    assert connections(server) == [1, 2]


@pytest.mark.parametrize("version, field, reused", [
    ("HTTP/1.0", None, False),                       # HTTP/1.0 closes unless it says otherwise
    ("HTTP/1.0", "Connection: keep-alive", True),
    ("HTTP/1.1", "Connection: keep-alive, close", False),
])
def test_persistence_follows_the_http_version(serve, client, version, field, reused):
    first = answer(b"first", *([field] if field else [])).replace(b"HTTP/1.1", version.encode(), 1)
    server = serve(first, answer(b"second"))
    assert get(client, server.url) == (200, b"first")
    assert get(client, server.url) == (200, b"second")
    assert connections(server) == ([1, 1] if reused else [1, 2])


def test_close_releases_idle_connections(serve, client):
    server = serve(answer(b"one"))
    get(client, server.url)
    client.close()
    server.wait_closed()


# -- malformed answers -------------------------------------------------------------------------

@pytest.mark.parametrize("status_line", [
    b"SSH-2.0-OpenSSH_9.2", b"HTTP/2 200 OK", b"HTTP/1.1 20 OK", b"HTTP/1.1 200OK", b"HTTP/1.1 abc OK", b"",
])
def test_malformed_status_line(serve, client, status_line):
    server = serve(status_line + b"\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(HTTPError, match="not an HTTP/1.x answer"):
        client.request("GET", server.url)


@pytest.mark.parametrize("field", [b"NoColonHere", b": no name", b"Name : space before colon",
                                   b" Folded: continuation line"])
def test_malformed_header(serve, client, field):
    server = serve(b"HTTP/1.1 200 OK\r\n" + field + b"\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(HTTPError, match="malformed HTTP header"):
        client.request("GET", server.url)


def test_bad_content_length(serve, client):
    server = serve(head_only("200 OK", "Content-Length: 12abc") + b"x")
    with pytest.raises(HTTPError, match="bad Content-Length"):
        client.request("GET", server.url)


def test_content_length_of_non_ascii_digits_is_an_http_error(serve, client):
    """``"\\xb2"`` (superscript two) is a digit for str.isdigit and int(): it must be an HTTPError,
    not a ValueError escaping the client's contract."""
    server = serve(b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nab")
    with pytest.raises(HTTPError, match="bad Content-Length"):
        client.request("GET", server.url)


def test_bad_chunk_size(serve, client):
    server = serve(head_only("200 OK", CHUNKED) + b"xyz\r\nabc\r\n0\r\n\r\n")
    with pytest.raises(HTTPError, match="malformed chunk size"):
        client.request("GET", server.url).content


def test_negative_chunk_size_is_an_http_error(serve, client):
    """int("-1", 16) would accept a negative chunk size, and the next read would ask recv() for -1
    bytes (or return buffered bytes as body)."""
    server = serve(head_only("200 OK", CHUNKED) + b"-1\r\n")
    response = client.request("GET", server.url)
    with pytest.raises(HTTPError, match="malformed chunk size"):
        response.content


def test_request_header_values_cannot_inject_fields(serve, client):
    """A CR or LF in a header value (a token from a token server, say) would start a field of its
    own; requests (http.client) refused such values too."""
    server = serve(answer(b"ok"))
    with pytest.raises(HTTPError):
        client.request("GET", server.url, {"Authorization": "Bearer abc\r\nX-Injected: yes"})
    assert all("x-injected" not in seen.headers for seen in server.seen)


# -- headers and URLs ----------------------------------------------------------------------------

def test_headers_are_case_insensitive_and_repeated_fields_joined():
    headers = Headers([("Content-Type", "a/b"), ("WWW-Authenticate", 'Bearer realm="x"'),
                       ("www-authenticate", "Basic"), ("Link", "<1>"), ("LINK", "<2>")])
    assert headers["content-type"] == headers.get("CONTENT-TYPE") == "a/b"
    assert headers["Www-Authenticate"] == 'Bearer realm="x", Basic'
    assert headers.get("link") == "<1>, <2>"
    assert "Content-Type" in headers and "Content-Length" not in headers
    assert headers.get("Content-Length") is None and headers.get("Content-Length", "0") == "0"
    with pytest.raises(KeyError):
        headers["Content-Length"]


@pytest.mark.parametrize("text, host, port, target, authority, address", [
    ("http://example.com", "example.com", 80, "/", "example.com", "example.com:80"),
    ("https://Example.COM/v2/", "example.com", 443, "/v2/", "example.com", "example.com:443"),
    ("HTTPS://example.com:443/x", "example.com", 443, "/x", "example.com", "example.com:443"),
    ("http://example.com:5000/a?c=d#e", "example.com", 5000, "/a?c=d", "example.com:5000", "example.com:5000"),
    ("http://example.com?q=1", "example.com", 80, "/?q=1", "example.com", "example.com:80"),
    ("https://[::1]:5000/v2/", "::1", 5000, "/v2/", "[::1]:5000", "[::1]:5000"),
    ("https://[2001:DB8::1]/", "2001:db8::1", 443, "/", "[2001:db8::1]", "[2001:db8::1]:443"),
])
def test_url_parts(text, host, port, target, authority, address):
    url = URL(text)
    parts = (url.host, url.port, url.target, url.authority, url.address)
    assert parts == (host, port, target, authority, address)
    assert (url.username, url.password) == (None, None)


@pytest.mark.parametrize("text, username, password, netloc", [
    ("http://alice:s3cret@proxy:3128", "alice", "s3cret", "proxy:3128"),
    ("http://alice@proxy", "alice", "", "proxy"),
    ("http://al%40ice:p%3Ass@proxy/", "al%40ice", "p%3Ass", "proxy"),  # decoded for Proxy-Authorization only
    ("http://a@b:c@proxy/", "a@b", "c", "proxy"),
])
def test_url_userinfo(text, username, password, netloc):
    url = URL(text)
    assert (url.username, url.password, url.netloc, url.authority) == (username, password, netloc, netloc)


@pytest.mark.parametrize("text", ["ftp://example.com/", "example.com/v2/", "socks5://proxy:1080",
                                  "http://", "http:///path", "http://example.com:port/", "http://[::1]x/"])
def test_bad_urls(text):
    with pytest.raises(HTTPError):
        URL(text)


@pytest.mark.parametrize("text", ["http://example.com:99999/", "http://example.com:65536/",
                                  "http://example.com:\u00b2/"])
def test_bad_ports_are_rejected(text):
    """getaddrinfo would wrap ports above 65535 (65536 + 8080 connects to 8080), and a superscript
    digit passes str.isdigit."""
    with pytest.raises(HTTPError, match="bad host"):
        URL(text)


@pytest.mark.parametrize("text", ["http://example.com/a b", "http://example.com/a\r\nX-Injected: yes",
                                  "http://example.com/a\rb", "http://example.com/\x00"])
def test_urls_with_spaces_or_control_characters_are_rejected(text):
    """The request target is sent verbatim, so a space or CR/LF (a redirect's Location, a token
    realm) would corrupt the request line or inject fields; http.client refused them too."""
    with pytest.raises(HTTPError):
        URL(text)


# -- TLS -----------------------------------------------------------------------------------------

def test_tls_verification_rejects_an_untrusted_certificate(tls_registry: RegistryServer):
    with pytest.raises(TLSError, match="certificate verify failed"):
        Client(verify=True).request("GET", tls_registry.url + "/v2/")


def test_tls_trusts_ssl_cert_file(tls_registry: RegistryServer, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_registry.ca_path))  # read when the client makes its context
    http = Client(verify=True)
    assert get(http, tls_registry.url + "/v2/") == (200, b"{}")
    assert get(http, tls_registry.url + "/v2/") == (200, b"{}")
    http.close()


def test_tls_without_verification(tls_registry: RegistryServer):
    http = Client(verify=False)
    assert get(http, tls_registry.url + "/v2/") == (200, b"{}")
    http.close()


# -- proxies -------------------------------------------------------------------------------------

@pytest.mark.parametrize("environment, url, expected", [
    ({"http_proxy": "http://proxy:3128"}, "http://example.com/", "proxy:3128"),
    ({"HTTP_PROXY": "http://proxy:3128"}, "http://example.com/", "proxy:3128"),
    ({"http_proxy": "http://low:1", "HTTP_PROXY": "http://up:2"}, "http://example.com/", "low:1"),
    ({"http_proxy": "http://proxy:3128"}, "https://example.com/", None),
    ({"https_proxy": "http://proxy:3128"}, "http://example.com/", None),
    ({"HTTPS_PROXY": "proxy:3128"}, "https://example.com/", "proxy:3128"),
    ({"https_proxy": "proxy"}, "https://example.com/", "proxy:80"),
    ({"https_proxy": "http://proxy"}, "https://localhost:5000/", None),
    ({"https_proxy": "http://proxy"}, "https://127.0.0.2/", None),
    ({"https_proxy": "http://proxy"}, "https://[::1]:5000/", None),
    ({"https_proxy": "http://proxy", "no_proxy": "example.com"}, "https://example.com/", None),
    ({"https_proxy": "http://proxy", "no_proxy": "example.com"}, "https://registry.example.com/", None),
    ({"https_proxy": "http://proxy", "no_proxy": "example.com"}, "https://notexample.com/", "proxy:80"),
    ({"https_proxy": "http://proxy", "no_proxy": ".example.com"}, "https://registry.example.com/", None),
    ({"https_proxy": "http://proxy", "NO_PROXY": "other.org, Example.com"}, "https://example.com/", None),
    ({"https_proxy": "http://proxy", "no_proxy": "example.com:5000"}, "https://example.com:5000/", None),
    ({"https_proxy": "http://proxy", "no_proxy": "example.com:5000"}, "https://example.com/", "proxy:80"),
    ({"https_proxy": "http://proxy", "no_proxy": "*"}, "https://example.com/", None),
])
def test_proxy_for(monkeypatch, environment, url, expected):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    proxy = proxy_for(URL(url))
    assert (proxy and proxy.address) == expected


def test_http_proxy_gets_absolute_form(serve, client, proxy, monkeypatch):
    origin = serve(answer(b"via proxy"))
    monkeypatch.setenv("http_proxy", proxy.url)
    url = f"http://{TARGET}:{origin.port}/v2/x?n=1"
    assert get(client, url, {"Accept": "a/b"}) == (200, b"via proxy")
    [seen] = proxy.seen
    assert (seen.method, seen.target) == ("GET", url)
    assert seen.headers["host"] == f"{TARGET}:{origin.port}"
    assert "proxy-authorization" not in seen.headers
    assert [(s.line, s.headers["accept"]) for s in origin.seen] == [("GET /v2/x?n=1 HTTP/1.1", "a/b")]


def test_loopback_and_no_proxy_targets_bypass_the_proxy(serve, client, proxy, monkeypatch):
    origin = serve(answer(b"direct"))
    monkeypatch.setenv("http_proxy", proxy.url)
    monkeypatch.setenv("no_proxy", ".invalid")
    assert get(client, origin.url) == (200, b"direct")
    with pytest.raises(HTTPError, match=TARGET):  # resolved by the client itself, which cannot
        client.request("GET", f"http://{TARGET}:{origin.port}/")
    assert proxy.seen == []


def test_unreachable_proxy_is_named(client, monkeypatch):
    with socket.socket() as probe:  # a free port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{port}")
    with pytest.raises(HTTPError, match=f"proxy 127.0.0.1:{port}: Connection refused"):
        client.request("GET", f"http://{TARGET}/")


def test_https_proxy_tunnels_with_connect(tls_registry: RegistryServer, proxy, monkeypatch):
    monkeypatch.setenv("https_proxy", proxy.url)
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")  # plain HTTP's proxy: must not be used
    http = Client(verify=False)
    url = f"https://{TARGET}:{tls_registry.port}/v2/"
    assert get(http, url) == (200, b"{}")
    assert get(http, url) == (200, b"{}")  # over the same tunnel
    http.close()
    [seen] = proxy.seen
    assert (seen.method, seen.target) == ("CONNECT", f"{TARGET}:{tls_registry.port}")
    assert seen.headers["host"] == f"{TARGET}:{tls_registry.port}"


def test_tls_through_a_tunnel_verifies_the_target_name(tls_registry: RegistryServer, proxy, monkeypatch):
    """The certificate is checked against the target's name (here not in it), not the proxy's."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_registry.ca_path))
    monkeypatch.setenv("https_proxy", proxy.url)
    with pytest.raises(TLSError, match="certificate verify failed"):
        Client(verify=True).request("GET", f"https://{TARGET}:{tls_registry.port}/v2/")
    assert [seen.method for seen in proxy.seen] == ["CONNECT"]


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_proxy_credentials_from_the_proxy_url(serve, tls_registry: RegistryServer, monkeypatch, scheme):
    with HTTPProxy(hosts={TARGET: "127.0.0.1"}, credentials=("al@ice", "p:ss w")) as proxy:
        monkeypatch.setenv(f"{scheme}_proxy", proxy.url_with_credentials("al%40ice", "p%3Ass%20w"))
        port = tls_registry.port if scheme == "https" else serve(answer(b"{}")).port
        http = Client(verify=False)
        assert get(http, f"{scheme}://{TARGET}:{port}/v2/") == (200, b"{}")
        http.close()
    [seen] = proxy.seen
    assert seen.headers["proxy-authorization"] == "Basic " + base64.b64encode(b"al@ice:p:ss w").decode()


def test_proxy_refusing_a_tunnel_is_a_proxy_error(tls_registry: RegistryServer, monkeypatch):
    with HTTPProxy(hosts={TARGET: "127.0.0.1"}, credentials=("alice", "s3cret")) as proxy:
        monkeypatch.setenv("https_proxy", proxy.url_with_credentials("alice", "wrong"))
        with pytest.raises(ProxyError, match="407"):
            Client(verify=False).request("GET", f"https://{TARGET}:{tls_registry.port}/v2/")


def test_plain_http_proxy_refusal_is_a_proxy_error(serve, client, monkeypatch):
    """Through an HTTP proxy, a 407 refuses the request itself: it says what to do, not "not a registry"."""
    origin = serve(answer(b"unreachable"))
    with HTTPProxy(hosts={TARGET: "127.0.0.1"}, credentials=("alice", "s3cret")) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        with pytest.raises(ProxyError, match="HTTP 407.*USER:PASSWORD@"):
            client.request("GET", f"http://{TARGET}:{origin.port}/")
    assert origin.seen == []


@pytest.mark.parametrize("value", ["https://proxy.example:3128", "socks5://proxy.example:1080"])
def test_unsupported_proxy_scheme_is_a_proxy_error(client, monkeypatch, value):
    """The error names the variable, and is a ProxyError, which the registry client does not retry."""
    monkeypatch.setenv("https_proxy", value)
    with pytest.raises(ProxyError, match="https_proxy"):
        client.request("GET", f"https://{TARGET}/v2/")
