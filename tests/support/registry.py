"""Run a real registry (Debian's ``docker-registry``, distribution 2.8) and a token server.

The tests exercise ocitool against the genuine registry implementation rather than a mock,
so protocol details (challenges, Range, digests, upload URLs) are whatever distribution does.
Everything binds to loopback on a free port and lives in a private temporary directory.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import bcrypt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from .images import Image, Index
from .serving import LoopbackServer


REGISTRY_BINARY = "/usr/bin/docker-registry"
START_TIMEOUT = 15.0

Auth = tuple[str, Any] | None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _b64url(data: bytes) -> str:
    """JOSE base64url encoding without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(public_key: rsa.RSAPublicKey) -> str:
    """The libtrust fingerprint distribution expects in a JWT ``kid`` header.

    libtrust hashes the DER SubjectPublicKeyInfo with SHA-256, base32-encodes the
    first 30 bytes and groups the 48 characters in fours separated by colons.
    """
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(b32[i:i + 4] for i in range(0, len(b32), 4))


def _self_signed_cert(key: rsa.RSAPrivateKey, common_name: str = "ocitool test token signer",
                      loopback_san: bool = False) -> x509.Certificate:
    """A self-signed CA certificate for ``key``: the JWT signer's trust root, or a TLS server's
    certificate for 127.0.0.1/localhost (``loopback_san``)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(name).issuer_name(name)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1))
               .not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True))
    if loopback_san:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(key, hashes.SHA256())


class TokenServer(LoopbackServer):
    """A Docker token-protocol auth server (``GET <realm>?service=..&scope=..``).

    Policy: a user in ``users`` with the right password gets every action requested;
    anonymous requests get ``pull`` on repositories under ``public/`` and nothing else;
    wrong credentials get 401. Tokens are RS256 JWTs whose header carries both ``x5c``
    (verified by distribution against ``rootcertbundle``) and the libtrust ``kid``.
    Every issued scope is recorded in ``issued`` as ``(user or None, scope)`` so tests
    can check that a client caches tokens instead of asking again; ``expires_in`` can be
    changed at any time to test refresh.
    """

    def __init__(self, users: dict[str, str] | None = None, expires_in: int = 300,
                 service: str = "ocitool-test-registry",
                 issuer: str = "ocitool-test-token-server") -> None:
        self.users = dict(users or {})
        self.expires_in = expires_in
        self.service = service
        self.issuer = issuer
        self.issued: list[tuple[str | None, str]] = []
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._cert = _self_signed_cert(self._key)
        self._dir: Path | None = None
        self.cert_path = Path()
        self.url = ""
        self.realm = ""

    def start(self) -> "TokenServer":
        """Write the certificate PEM and serve on a free loopback port in a background thread."""
        self._dir = Path(tempfile.mkdtemp(prefix="ocitool-token-"))
        self.cert_path = self._dir / "signer.pem"
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self.url = f"http://127.0.0.1:{self.serve(_token_handler(self))}"
        self.realm = f"{self.url}/token"
        return self

    def stop(self) -> None:
        """Stop serving and delete the certificate directory."""
        super().stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> "TokenServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def grant(self, user: str | None, scope: str) -> dict[str, Any] | None:
        """The access entry ``user`` gets for one ``type:name:actions`` scope, or None."""
        try:
            kind, rest = scope.split(":", 1)
            name, actions = rest.rsplit(":", 1)
        except ValueError:
            return None
        wanted = [a for a in actions.split(",") if a]
        if user is None:
            wanted = ["pull"] if kind == "repository" and name.startswith("public/") \
                and "pull" in wanted else []
        return {"type": kind, "name": name, "actions": wanted}

    def check_credentials(self, authorization: str | None) -> tuple[bool, str | None]:
        """Parse an optional Basic ``Authorization`` header: (valid, user or None)."""
        if not authorization:
            return True, None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False, None
        return self.users.get(user) == password, user

    def issue(self, user: str | None, scopes: list[str]) -> dict[str, Any]:
        """Mint a token for ``user`` covering ``scopes`` and return the JSON response body."""
        access = [entry for s in scopes if (entry := self.grant(user, s)) is not None]
        self.issued.extend((user, s) for s in scopes or [""])
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service,
                  "exp": now + self.expires_in, "nbf": now - 1, "iat": now,
                  "jti": uuid.uuid4().hex, "access": access}
        token = self._sign(claims)
        issued_at = dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat().replace("+00:00", "Z")
        return {"token": token, "access_token": token, "expires_in": self.expires_in,
                "issued_at": issued_at}

    def _sign(self, claims: dict[str, Any]) -> str:
        """Serialize and RS256-sign a JWT with the x5c/kid header distribution verifies."""
        header = {"typ": "JWT", "alg": "RS256",
                  "kid": libtrust_key_id(self._key.public_key()),
                  "x5c": [base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()]}
        signing_input = ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode())
                                 for part in (header, claims))
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"


def _token_handler(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``server``'s policy and keys."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            parts = urlsplit(self.path)
            if parts.path != "/token":
                self._reply(404, {"error": "not found"})
                return
            valid, user = server.check_credentials(self.headers.get("Authorization"))
            if not valid:
                self._reply(401, {"error": "invalid credentials"},
                            {"WWW-Authenticate": 'Basic realm="token"'})
                return
            query = parse_qs(parts.query)
            scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
            self._reply(200, server.issue(user, scopes))

        def _reply(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Keep test output quiet."""

    return Handler


class RegistryServer:
    """A ``docker-registry serve`` process with its own storage, config and log file.

    ``auth`` is None (open), ``("htpasswd", {user: password})`` or ``("token", TokenServer)``.
    With ``tls`` it serves HTTPS with a self-signed certificate for 127.0.0.1 (``ca_path``).
    ``images`` is filled by the fixtures that seed the registry ("repo:tag" -> built image).
    """

    def __init__(self, auth: Auth = None, tls: bool = False) -> None:
        self.auth = auth
        self.tls = tls
        self.ca_path = Path()
        self.images: dict[str, Image | Index] = {}
        self.token_server: TokenServer | None = auth[1] if auth and auth[0] == "token" else None
        self.users: dict[str, str] = dict(auth[1]) if auth and auth[0] == "htpasswd" else {}
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.host = ""
        self.url = ""

    @property
    def log_path(self) -> Path:
        """The file the registry writes its stdout and stderr to."""
        assert self._dir is not None, "registry not started"
        return self._dir / "registry.log"

    def start(self) -> "RegistryServer":
        """Write the config, launch the registry and wait until ``/v2/`` answers."""
        self._dir = Path(tempfile.mkdtemp(prefix="ocitool-registry-"))
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"{'https' if self.tls else 'http'}://{self.host}"
        config = self._dir / "config.yml"
        config.write_text(self._config_yaml())
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen([REGISTRY_BINARY, "serve", str(config)],
                                          stdout=log, stderr=subprocess.STDOUT, env=env)
        self._wait_ready()
        return self

    def stop(self) -> None:
        """Terminate the registry and delete its storage."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> "RegistryServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the registry log, for error messages."""
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _wait_ready(self) -> None:
        """Poll ``GET /v2/`` until it answers 200/401; fail with the log tail otherwise."""
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                verify = str(self.ca_path) if self.tls else True
                if requests.get(f"{self.url}/v2/", timeout=1, verify=verify).status_code in (200, 401):
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"docker-registry did not start on {self.host}; log tail:\n{tail}")

    def _config_yaml(self) -> str:
        """The registry configuration (JSON is valid YAML, so no YAML library is needed)."""
        assert self._dir is not None
        config = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self._dir / "storage")},
                        "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}}},
            "http": {"addr": self.host, "secret": "ocitool-test-secret"},
        }
        if self.auth is not None:
            config["auth"] = self._auth_config()
        if self.tls:
            config["http"]["tls"] = self._tls_files()
        return json.dumps(config, indent=2)

    def _tls_files(self) -> dict[str, str]:
        """Write a key and self-signed certificate for 127.0.0.1; the certificate is its own CA."""
        assert self._dir is not None
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ca_path = self._dir / "cert.pem"
        self.ca_path.write_bytes(_self_signed_cert(key, "127.0.0.1", loopback_san=True)
                                 .public_bytes(serialization.Encoding.PEM))
        key_path = self._dir / "key.pem"
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return {"certificate": str(self.ca_path), "key": str(key_path)}

    def _auth_config(self) -> dict[str, Any]:
        """The ``auth`` section for the htpasswd or token mode."""
        assert self._dir is not None and self.auth is not None
        mode, value = self.auth
        if mode == "htpasswd":
            path = self._dir / "htpasswd"
            path.write_text("".join(
                f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
                for user, pw in value.items()))
            return {"htpasswd": {"realm": "test", "path": str(path)}}
        if mode == "token":
            return {"token": {"realm": value.realm, "service": value.service,
                              "issuer": value.issuer, "rootcertbundle": str(value.cert_path)}}
        raise ValueError(f"unknown auth mode {mode!r}")
