"""A local Apache Kafka that requires SASL_SSL: a throwaway CA, the broker's certificate, the listener.

For tests and for trying the security settings (``RTQIS_SECURITY_PROTOCOL=SASL_SSL``, ``RTQIS_SASL_*``,
``RTQIS_SSL_CAFILE``) against a broker that refuses anything else, with no Java keystore tooling:

- :func:`make_ca` / :func:`broker_certificate`: a CA and a broker certificate signed by it (RSA 2048, PEM,
  made with the ``openssl`` command), valid for ``localhost`` and ``127.0.0.1`` (clients check the host
  name); Kafka reads them as PEM stores (``ssl.keystore.type=PEM``: key and chain in one file);
- :func:`sasl_ssl_properties`: the ``server.properties`` entries (for
  :class:`~rtqis.kafka.apache.ApacheKafka`'s ``extra_properties``) that make the client listener
  ``SASL_SSL`` with SCRAM-SHA-512 and SCRAM-SHA-256; the controller listener stays PLAINTEXT on loopback;
- :func:`scram_credentials`: the ``kafka-storage format --add-scram`` specs (``scram_users``) that create
  the SCRAM users when the storage is formatted (KRaft keeps them in its metadata log).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rtqis.errors import BrokerError

__all__ = [
    "SCRAM_MECHANISMS",
    "BrokerTls",
    "broker_certificate",
    "make_ca",
    "sasl_ssl_properties",
    "scram_credentials",
]

log = logging.getLogger(__name__)

#: the SCRAM mechanisms the secure listener accepts (the first is the inter-broker one)
SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
#: validity of the throwaway certificates (days): they live as long as a test's tmp dir
_DAYS = 7
_OPENSSL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class BrokerTls:
    """The PEM files of a TLS broker: ``ca`` (the CA certificate clients trust, ``RTQIS_SSL_CAFILE``) and
    ``keystore`` (the broker's private key then its certificate, read by Kafka as a PEM keystore)."""

    ca: Path
    keystore: Path


def _openssl(*args: str) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise BrokerError("making a test certificate needs the `openssl` command, which is not on PATH")
    try:
        r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=_OPENSSL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise BrokerError(f"openssl {args[0]} took over {_OPENSSL_TIMEOUT_S:.0f} s") from None
    if r.returncode != 0:
        tail = " | ".join(r.stderr.strip().splitlines()[-2:])
        raise BrokerError(f"openssl {args[0]} failed (exit {r.returncode}): {tail}")


def make_ca(directory: Path, name: str = "rtqis-test-ca") -> tuple[Path, Path]:
    """A new self-signed CA in ``directory``: (``name``.pem, ``name``.key), an unencrypted RSA key."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", str(_DAYS),
        "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


def broker_certificate(
    directory: Path, ca: tuple[Path, Path], hosts: Iterable[str] = ("localhost", "127.0.0.1"), name: str = "broker"
) -> BrokerTls:
    """A broker certificate for ``hosts`` (DNS names or IP addresses) signed by ``ca`` = (cert, key).

    Returns the CA certificate and ``name``-keystore.pem: the PKCS#8 key then the certificate, which is
    what Kafka's PEM keystore wants (no password: the file is private to the test's directory)."""
    directory.mkdir(parents=True, exist_ok=True)
    key, csr, crt = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    san = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts)
    ext = directory / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n")
    first = next(iter(hosts), "localhost")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={first}")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
        "-sha256", "-days", str(_DAYS), "-extfile", str(ext), "-out", str(crt),
    )  # fmt: skip
    keystore = directory / f"{name}-keystore.pem"
    keystore.write_text(key.read_text() + crt.read_text())
    keystore.chmod(0o600)
    log.info("made a broker certificate for %s in %s", san, directory)
    return BrokerTls(ca=ca[0], keystore=keystore)


def _jaas(username: str, password: str) -> str:
    for v in (username, password):
        if '"' in v or "\\" in v:
            raise BrokerError('a SCRAM user name or password for the local broker may not contain " or \\')
    module = "org.apache.kafka.common.security.scram.ScramLoginModule"
    return f'{module} required username="{username}" password="{password}";'


def sasl_ssl_properties(
    *, host: str, port: int, controller_port: int, tls: BrokerTls, username: str, password: str
) -> dict[str, str]:
    """``server.properties`` entries for a ``SASL_SSL`` client listener on ``host:port`` (SCRAM-SHA-512
    and -256, TLS with ``tls``), the controller on ``host:controller_port`` still PLAINTEXT.

    ``username``/``password`` is the broker's own SCRAM user (the inter-broker listener is the secure
    one): it must be among the users created at format time (:func:`scram_credentials`)."""
    props = {
        "listeners": f"SASL_SSL://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"SASL_SSL://{host}:{port}",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.enabled.mechanisms": ",".join(SCRAM_MECHANISMS),
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISMS[0],
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls.keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls.ca),
        "ssl.client.auth": "none",
    }
    for mech in SCRAM_MECHANISMS:
        props[f"listener.name.sasl_ssl.{mech.lower()}.sasl.jaas.config"] = _jaas(username, password)
    return props


def scram_credentials(users: Mapping[str, str]) -> list[str]:
    """``kafka-storage format --add-scram`` specs creating each ``user: password`` for every mechanism of
    :data:`SCRAM_MECHANISMS`, e.g. ``SCRAM-SHA-512=[name=rtqis,password=secret]``."""
    out = []
    for user, pw in users.items():
        if any(c in user + pw for c in ",[]=\"' "):
            raise BrokerError(
                "a SCRAM user name or password for the local broker may not contain ,[]= quotes or spaces"
            )
        out += [f"{mech}=[name={user},password={pw}]" for mech in SCRAM_MECHANISMS]
    return out
