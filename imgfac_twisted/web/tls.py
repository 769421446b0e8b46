"""TLS material for the HTTPS listener.

Three jobs, all done once at start-up, before the reactor runs (the code
here is blocking on purpose):

* :func:`ensure_self_signed_pem` makes (``tls_generate``) or reuses a
  self-signed certificate and key in the state directory, so the daemon can serve
  HTTPS out of the box without an operator-supplied certificate;
* :func:`load_pem` reads a PEM bundle (the self-signed one or the
  operator's ``--ssl_pem``) and checks that it is usable;
* :func:`server_context_factory` turns that bundle into the Twisted
  context factory given to ``reactor.listenSSL``, TLS 1.2 minimum;
* :func:`certificate_fingerprint` gives the SHA-256 fingerprint the daemon
  logs, so operators can compare it with what clients are shown.

Every failure an operator can cause is reported as
:class:`~imgfac_twisted.errors.ConfigError`, whose message names the file
and the problem but never contains key material.
"""

from __future__ import annotations

import datetime
import os
import re
import socket
from typing import Any, NamedTuple

import OpenSSL
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PublicKeyTypes,
)
from OpenSSL import SSL, crypto
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.logger import Logger

from imgfac_twisted.errors import ConfigError
from imgfac_twisted.web.tls_generate import generate, write_atomically

__all__ = [
    "SELF_SIGNED_DIR",
    "SELF_SIGNED_NAME",
    "PemMaterial",
    "certificate_fingerprint",
    "ensure_self_signed_pem",
    "load_pem",
    "server_context_factory",
]

log = Logger()

#: Sub-directory of the state directory holding the generated material.
SELF_SIGNED_DIR = "tls"
#: File name of the generated key + certificate bundle.
SELF_SIGNED_NAME = "imagefactory.pem"

# One PEM block: "-----BEGIN <LABEL>-----" ... "-----END <LABEL>-----".
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
_CERT_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE"}
_KEY_LABELS = {b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY"}
_ENCRYPTED_KEY_LABEL = b"ENCRYPTED PRIVATE KEY"


class PemMaterial(NamedTuple):
    """What :func:`load_pem` found in a PEM bundle."""

    #: The private key (a cryptography key object; never log it).
    key: CertificateIssuerPrivateKeyTypes
    #: The server (leaf) certificate, the one matching :attr:`key`.
    certificate: x509.Certificate
    #: The other certificates of the file (intermediates), in file order.
    chain: list[x509.Certificate]


def _public_der(public_key: PublicKeyTypes) -> bytes:
    """DER SubjectPublicKeyInfo of a public key, used to compare keys."""
    return public_key.public_bytes(
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def load_pem(path: str) -> PemMaterial:
    """Read and check a PEM bundle holding a private key and certificate(s).

    The blocks may come in any order.  The certificate whose public key
    matches the private key is the server certificate; every other
    certificate is returned as the chain (intermediates), in file order.

    Raises :class:`ConfigError` naming *path* and the problem when the file
    is missing or unreadable, holds no certificate, no private key, more
    than one private key, an encrypted key, an unparsable block, or a key
    that matches none of the certificates.  Messages never quote the
    file's contents.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError(f"TLS PEM file {path!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"TLS PEM file {path!r} is a directory") from None
    except OSError as e:
        # strerror only ("Permission denied", ...): no contents involved.
        raise ConfigError(f"TLS PEM file {path!r} cannot be read: {e.strerror or e}") from None

    certificates: list[x509.Certificate] = []
    keys: list[CertificateIssuerPrivateKeyTypes] = []
    for number, match in enumerate(_PEM_BLOCK.finditer(data), start=1):
        label = match.group(1)
        block = match.group(0)
        if label in _CERT_LABELS:
            try:
                certificates.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                # "from None": the parser's exception may carry pieces of
                # the input; keep them out of the operator-facing message
                # and out of tracebacks.
                raise ConfigError(
                    f"TLS PEM file {path!r}: block {number} ({label.decode()}) is not a valid certificate"
                ) from None
        elif label == _ENCRYPTED_KEY_LABEL:
            raise ConfigError(
                f"TLS PEM file {path!r}: the private key is encrypted; "
                "an unencrypted key is required (the daemon cannot prompt "
                "for a passphrase)"
            )
        elif label in _KEY_LABELS:
            try:
                key = serialization.load_pem_private_key(block, password=None)
            except TypeError:
                # Legacy "Proc-Type: 4,ENCRYPTED" RSA/EC keys land here.
                raise ConfigError(
                    f"TLS PEM file {path!r}: the private key is encrypted; an unencrypted key is required"
                ) from None
            except (ValueError, UnsupportedAlgorithm):
                raise ConfigError(
                    f"TLS PEM file {path!r}: block {number} ({label.decode()}) is not a valid private key"
                ) from None
            keys.append(key)  # type: ignore[arg-type]
        # Other blocks (EC PARAMETERS, DH PARAMETERS, ...) are ignored, as
        # OpenSSL tools ignore them.

    if not certificates and not keys:
        raise ConfigError(f"TLS PEM file {path!r} holds no PEM certificate or private key")
    if not certificates:
        raise ConfigError(f"TLS PEM file {path!r} holds no certificate")
    if not keys:
        raise ConfigError(f"TLS PEM file {path!r} holds no private key")
    if len(keys) > 1:
        raise ConfigError(f"TLS PEM file {path!r} holds {len(keys)} private keys; exactly one is expected")
    key = keys[0]

    key_der = _public_der(key.public_key())
    for index, cert in enumerate(certificates):
        try:
            matches = _public_der(cert.public_key()) == key_der
        except (ValueError, UnsupportedAlgorithm):
            matches = False
        if matches:
            chain = certificates[:index] + certificates[index + 1 :]
            return PemMaterial(key, cert, chain)
    raise ConfigError(
        f"TLS PEM file {path!r}: the private key does not match "
        f"{'the certificate' if len(certificates) == 1 else 'any of its certificates'}"
    )


def certificate_fingerprint(pem_path: str) -> str:
    """Return the SHA-256 fingerprint of the server certificate in *pem_path*.

    Upper-case hex pairs separated by colons, the format of
    ``openssl x509 -noout -fingerprint -sha256`` and of browsers, so the
    operator can compare it with what a client shows.  Raises
    :class:`ConfigError` as :func:`load_pem` does.
    """
    material = load_pem(pem_path)
    return material.certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def _pyopenssl_takes_cryptography_objects() -> bool:
    """Whether pyOpenSSL's Context accepts cryptography keys/certificates.

    pyOpenSSL >= 24.3 accepts them in ``use_certificate``,
    ``use_privatekey`` and ``add_extra_chain_cert`` (which Twisted's
    CertificateOptions merely forwards to) and deprecates its own X509 and
    PKey wrappers; older releases accept only the wrappers.
    """
    try:
        major, minor = (int(p) for p in OpenSSL.__version__.split(".")[:2])
    except ValueError:
        return True
    return (major, minor) >= (24, 3)


def _for_pyopenssl(obj: object) -> Any:
    """*obj* (cryptography key or certificate) in the form pyOpenSSL wants.

    Any: Twisted's annotations name pyOpenSSL's own types only, which a recent
    pyOpenSSL takes cryptography's objects in place of.
    """
    if _pyopenssl_takes_cryptography_objects():
        return obj
    if isinstance(obj, x509.Certificate):
        return crypto.X509.from_cryptography(obj)
    return crypto.PKey.from_cryptography_key(obj)  # type: ignore[arg-type]


def server_context_factory(pem_path: str) -> CertificateOptions:
    """Build the TLS server context factory for ``reactor.listenSSL``.

    Serves the server certificate and key of *pem_path* plus any other
    certificate of the file as the chain (intermediates), refuses
    protocol versions older than TLS 1.2 and keeps Twisted's default
    (modern, forward-secret) cipher selection.  Raises
    :class:`ConfigError` if the file is unusable.
    """
    material = load_pem(pem_path)
    try:
        options = CertificateOptions(
            privateKey=_for_pyopenssl(material.key),
            certificate=_for_pyopenssl(material.certificate),
            extraCertChain=[_for_pyopenssl(c) for c in material.chain],
            # Twisted's default minimum is already TLS 1.2 today; saying so
            # explicitly keeps it so should that default ever be lowered.
            raiseMinimumTo=TLSVersion.TLSv1_2,
        )
        # Build the OpenSSL context now (it is cached and reused for every
        # connection) so that a problem OpenSSL has with the material (key
        # type it cannot use, key/cert mismatch) stops the daemon at
        # start-up instead of failing each handshake later.
        options.getContext()
    except (SSL.Error, crypto.Error, TypeError, ValueError) as e:
        # OpenSSL's error strings ("key values mismatch", "unsupported
        # key type", ...) describe the problem, never the key itself.
        raise ConfigError(f"TLS PEM file {pem_path!r} cannot be used by OpenSSL: {type(e).__name__}: {e}") from None
    return options


def ensure_self_signed_pem(state_dir: str, hostname: str | None = None) -> str:
    """Return the path of the self-signed bundle ``<state_dir>/tls/imagefactory.pem``.

    If the file exists and holds a usable private key and certificate it is
    reused as is (clients that trusted it keep trusting it).  Otherwise a
    new EC P-256 key and a self-signed SHA-256 certificate are generated:
    CN *hostname* (default ``socket.gethostname()``), subjectAltName DNS
    *hostname* and ``localhost`` plus IP 127.0.0.1 and ::1, valid from one
    day ago for about ten years, not a CA, server authentication only.
    The bundle (key first, then certificate) is written atomically with
    mode 0600 in a directory with mode 0700.

    Blocking: call it once at start-up, before the reactor runs.  Raises
    :class:`ConfigError` if the directory or file cannot be created.
    """
    if hostname is None:
        hostname = socket.gethostname()
    hostname = hostname.strip().rstrip(".") or "localhost"

    tls_dir = os.path.join(state_dir, SELF_SIGNED_DIR)
    path = os.path.join(tls_dir, SELF_SIGNED_NAME)
    try:
        os.makedirs(tls_dir, mode=0o700, exist_ok=True)
        # makedirs' mode is filtered by the umask and ignored for an
        # existing directory: enforce it.
        os.chmod(tls_dir, 0o700)
    except OSError as e:
        raise ConfigError(f"cannot create TLS directory {tls_dir!r}: {e.strerror or e}") from None

    if os.path.lexists(path):
        try:
            material = load_pem(path)
        except ConfigError as e:
            # The file is ours (it lives in our state directory) and is
            # useless as it is: replace it rather than refuse to start.
            log.warn(
                "Replacing unusable self-signed TLS bundle: {reason}",
                reason=e.message,
            )
        else:
            now = datetime.datetime.now(datetime.UTC)
            if material.certificate.not_valid_after_utc < now:
                log.warn(
                    "Self-signed TLS certificate {path} expired on {date}; delete it to have a new one generated",
                    path=path,
                    date=material.certificate.not_valid_after_utc.isoformat(),
                )
            try:
                # Tighten permissions of a bundle copied in by hand.
                os.chmod(path, 0o600)
            except OSError:
                pass
            return path

    try:
        write_atomically(path, generate(hostname))
    except OSError as e:
        raise ConfigError(f"cannot write TLS PEM file {path!r}: {e.strerror or e}") from None
    log.info("Generated self-signed TLS certificate {path}", path=path)
    return path
