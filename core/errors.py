"""The exceptions every layer raises; the messages are meant for the analyst."""
from __future__ import annotations


class InputError(Exception):
    """An input cannot be used (missing, not overlapping, wrong units...)."""


class Cancelled(Exception):
    """The caller asked to stop; nothing was written."""
