"""One base class for every error RT-QIS raises on purpose.

The CLI turns an :class:`RtqisError` into one readable line and a non-zero exit; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class RtqisError(Exception):
    """Base class: an expected failure with a message meant for the user."""

    exit_code = 1


class ConfigError(RtqisError):
    """Invalid configuration (environment, rtqis.toml or flags)."""

    exit_code = 2


class BrokerError(RtqisError):
    """The broker could not be started, reached or used."""


class PortInUseError(BrokerError):
    """A port we need is already taken by another process."""


class SchemaError(RtqisError):
    """A message does not match its declared schema."""


class DecodeError(SchemaError):
    """Bytes that cannot be decoded into a known message type."""


class IntervalError(RtqisError, ValueError):
    """An interval name (``1m``, ``5m``, ``1w`` ...) that is malformed or not supported where it is used."""

    exit_code = 2
