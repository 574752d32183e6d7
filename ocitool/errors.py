"""Errors that ocitool reports to users as one line.

Every failure a user can cause or fix (bad input, an unreachable or lying registry,
a missing image) is raised as an :class:`OcitoolError` subclass; the CLI prints its
message as ``ocitool: error: <message>`` and exits non-zero. Anything else is a bug.
"""


class OcitoolError(Exception):
    """A failure with a message fit for the user; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(OcitoolError):
    """A command line that does not parse: wrong flags or arguments."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class InvalidReferenceError(OcitoolError):
    """An image reference that cannot be parsed or normalized."""


class RegistryError(OcitoolError):
    """A registry refused, failed or answered something we cannot use."""


class AuthError(RegistryError):
    """Credentials are missing, wrong or cannot be obtained."""


class NotFoundError(OcitoolError):
    """A repository, tag, image or blob does not exist."""


class DigestMismatchError(OcitoolError):
    """Content did not hash to (or was not the size of) its descriptor."""


class ManifestError(OcitoolError):
    """A manifest or index that is malformed or of an unsupported kind."""


class StoreError(OcitoolError):
    """The local OCI image layout is unusable."""


class ConfigError(OcitoolError):
    """The ocitool configuration file is invalid."""


class LayerError(OcitoolError):
    """A layer blob that cannot be applied: not a tar, corrupt, truncated or unsafe."""
