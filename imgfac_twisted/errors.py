"""Domain exceptions.

They know nothing of HTTP: the web layer maps each of them to a status code
and a body in one place (``imgfac_twisted.web.errors``).
"""


class ImageFactoryError(Exception):
    """Base of every error the factory reports to a client or an operator."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ImageFactoryError):
    """A request parameter is missing or malformed (the client's mistake)."""


class InvalidTemplate(InvalidRequest):
    """A TDL template is not well-formed, too large, or does not validate."""


class InvalidCredentials(InvalidRequest):
    """Provider credentials are malformed or of the wrong kind for the provider."""


class UnknownObject(ImageFactoryError):
    """An id names no image, build, target image, provider image or builder."""


class PayloadTooLarge(ImageFactoryError):
    """A request body is larger than the configured cap."""


class AuthenticationFailed(ImageFactoryError):
    """A write request is not signed, or its OAuth signature does not verify."""


class ConfigError(ImageFactoryError):
    """The configuration (file or command line) is invalid."""


class InvalidTransition(ImageFactoryError):
    """A builder was asked to move to a status its current status cannot reach."""
