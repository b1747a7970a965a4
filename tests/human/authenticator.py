"""The software authenticator now lives in the package; kept here for existing imports."""

from edgetrust.human.authenticator import AT, UP, UV, SoftAuthenticator

__all__ = ["AT", "UP", "UV", "SoftAuthenticator"]
