"""A registry as the user configured it: mirrors first, TLS policy, credentials.

Turns a :class:`Reference` into a connected :class:`RegistryClient` and its top-level
manifest, trying the configured mirrors in order before the registry itself.
"""

from __future__ import annotations


from ocitool.config import Config, is_loopback_host
from ocitool.errors import OcitoolError
from ocitool.image.access import AccessOptions
from ocitool.image.credentials import find_credentials
from ocitool.image.reference import Reference
from ocitool.image.registry import ManifestResponse, RegistryClient, RetryPolicy
from ocitool.log import get_logger

log = get_logger(__name__)


MIRROR_RETRY = RetryPolicy(attempts=2)


def client_for(host: str, repository: str, config: Config, access: AccessOptions,
               mirror: bool = False) -> RegistryClient:
    """A client for ``host``.

    A mirror gets no ``--creds`` (those are for the registry the user named) and gives
    up sooner, since the registry itself is the fallback.
    """
    insecure = access.tls_verify is False or (
        access.tls_verify is None and (config.registry(host).insecure or is_loopback_host(host)))
    credentials = find_credentials(host, repository, None if mirror else access.creds, access.authfile)
    return RegistryClient(host, insecure=insecure, credentials=credentials,
                          retry=MIRROR_RETRY if mirror else RetryPolicy())


def open_manifest(ref: Reference, config: Config,
                  access: AccessOptions = AccessOptions()) -> tuple[RegistryClient, ManifestResponse]:
    """Fetch ``ref``'s top-level manifest from the first mirror that has it, else the registry.

    Returns the client that answered, so blobs come from the same place.
    """
    for mirror in config.registry(ref.registry).mirrors:
        client = client_for(mirror, ref.repository, config, access, mirror=True)
        try:
            return client, client.get_manifest(ref.repository, ref.target)
        except OcitoolError as exc:
            log.info("mirror %s failed for %s, trying the next source: %s", mirror, ref, exc)
            client.close()
    client = client_for(ref.api_host, ref.repository, config, access)
    try:
        return client, client.get_manifest(ref.repository, ref.target)
    except BaseException:
        client.close()
        raise
