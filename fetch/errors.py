"""Typed fetch errors; every message is meant for the analyst."""
from __future__ import annotations

from ..core.errors import InputError


class FetchError(InputError):
    """Anything that stops a fetch (nothing is written to the output folder)."""


class MissingPackage(FetchError):
    """pystac-client is not installed in the running Python."""


class CatalogError(FetchError):
    """The STAC API cannot be reached or answers with an error."""


class NoItems(FetchError):
    """No usable item in the time window over the area."""


class UncalibratedSAR(FetchError):
    """Only uncalibrated Sentinel-1 GRD is offered; detect needs calibrated backscatter."""


class NetworkError(FetchError):
    """A file server failed while reading an asset."""


class TokenExpired(NetworkError):
    """The file server refused a signed URL (HTTP 403): the signing token expired or is invalid."""
