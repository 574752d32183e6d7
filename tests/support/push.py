"""A minimal, test-owned registry client that pushes the images from ``images.py``.

It deliberately shares no code with ocitool: seeding the registry must not depend on
the code under test. It answers Basic and Bearer challenges itself.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin

import requests

from .images import Image, Index

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class _Client:
    """A requests session that retries once after answering a 401 challenge."""

    def __init__(self, registry_url: str, repository: str,
                 creds: tuple[str, str] | None, verify: bool | str = True) -> None:
        self.base = registry_url.rstrip("/")
        self.repository = repository
        self.creds = creds
        self.session = requests.Session()
        self.verify = verify  # passed per request: a session's own would lose to $REQUESTS_CA_BUNDLE

    def request(self, method: str, url: str, **kwargs: object) -> requests.Response:
        """Send a request to ``url`` (absolute, or relative to the registry)."""
        url = urljoin(self.base + "/", url)
        kwargs.setdefault("verify", self.verify)
        response = self.session.request(method, url, allow_redirects=False, **kwargs)
        if response.status_code == 401 and self._authenticate(response):
            response = self.session.request(method, url, allow_redirects=False, **kwargs)
        return response

    def _authenticate(self, response: requests.Response) -> bool:
        """Set the session's Authorization from the challenge; False if there is nothing to try."""
        scheme, _, params = response.headers.get("WWW-Authenticate", "").partition(" ")
        if scheme.lower() == "basic" and self.creds:
            self.session.auth = self.creds
            return True
        if scheme.lower() != "bearer":
            return False
        challenge = dict(_CHALLENGE_PARAM.findall(params))
        token = requests.get(challenge["realm"], auth=self.creds, timeout=30, params={
            "service": challenge.get("service", ""),
            "scope": f"repository:{self.repository}:pull,push"})
        token.raise_for_status()
        body = token.json()
        self.session.headers["Authorization"] = f"Bearer {body.get('token') or body['access_token']}"
        return True

    def push_blob(self, data: bytes, digest: str) -> None:
        """Upload a blob monolithically unless the registry already has it."""
        blob_url = f"/v2/{self.repository}/blobs/{digest}"
        if self.request("HEAD", blob_url).status_code == 200:
            return
        start = self.request("POST", f"/v2/{self.repository}/blobs/uploads/")
        _expect(start, 202)
        location = start.headers["Location"]
        separator = "&" if "?" in location else "?"
        done = self.request("PUT", f"{location}{separator}digest={digest}", data=data,
                            headers={"Content-Type": "application/octet-stream"})
        _expect(done, 201)

    def push_manifest(self, reference: str, media_type: str, data: bytes) -> str:
        """PUT a manifest under a tag or digest; return the registry's Docker-Content-Digest."""
        response = self.request("PUT", f"/v2/{self.repository}/manifests/{reference}",
                                data=data, headers={"Content-Type": media_type})
        _expect(response, 201)
        return response.headers["Docker-Content-Digest"]

    def push_image(self, image: Image, reference: str) -> str:
        """Push an image's blobs, then its manifest under ``reference``."""
        for blob in image.blobs:
            self.push_blob(blob.data, blob.digest)
        return self.push_manifest(reference, image.manifest.media_type, image.manifest.data)


def _expect(response: requests.Response, status: int) -> None:
    """Fail loudly, with the registry's error body, on an unexpected status."""
    if response.status_code != status:
        raise RuntimeError(f"{response.request.method} {response.url}: expected {status}, "
                           f"got {response.status_code}: {response.text[:500]}")


def push_image(registry_url: str, repository: str, tag: str, image_or_index: Image | Index,
               creds: tuple[str, str] | None = None, verify: bool | str = True) -> str:
    """Push an image (or an index and all its children) and tag it; return its digest.

    ``creds`` are (user, password), used for Basic auth or to fetch a Bearer token;
    ``verify`` is a CA bundle path for an HTTPS registry with a self-signed certificate.
    The returned digest is the one the registry reported, checked against the built one.
    """
    client = _Client(registry_url, repository, creds, verify)
    if isinstance(image_or_index, Image):
        digest = client.push_image(image_or_index, tag)
    else:
        for child, _platform in image_or_index.manifests:
            client.push_image(child, child.digest)
        index = image_or_index.index
        digest = client.push_manifest(tag, index.media_type, index.data)
    if digest != image_or_index.digest:
        raise RuntimeError(f"registry stored {digest}, expected {image_or_index.digest}")
    return digest
