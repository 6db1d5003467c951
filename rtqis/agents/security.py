"""How the worker authenticates to the broker: the Faust ``broker_credentials`` of the settings.

The same ``RTQIS_SECURITY_PROTOCOL`` / ``RTQIS_SSL_*`` / ``RTQIS_SASL_*`` settings as every other client
(see :mod:`rtqis.kafka.clients`), in the form Faust takes: an ``ssl.SSLContext`` for SSL, a
``faust.SASLCredentials`` (carrying that context for SASL_SSL) for SASL.
"""

from __future__ import annotations

import ssl

import faust

from rtqis.settings import Settings

__all__ = ["broker_credentials"]


def broker_credentials(settings: Settings) -> ssl.SSLContext | faust.SASLCredentials | None:
    """Faust's ``broker_credentials`` for ``settings`` (None for PLAINTEXT)."""
    if settings.security_protocol == "PLAINTEXT":
        return None
    ctx = None
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        ctx = ssl.create_default_context(cafile=settings.ssl_cafile)
        if settings.ssl_certfile:
            ctx.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    if settings.security_protocol.startswith("SASL"):
        pw = settings.sasl_password.get_secret_value() if settings.sasl_password else None
        return faust.SASLCredentials(
            username=settings.sasl_username, password=pw, ssl_context=ctx, mechanism=settings.sasl_mechanism
        )
    return ctx
