"""Making the self-signed TLS bundle: an EC P-256 key and its certificate, written atomically.

Blocking on purpose: called once at start-up, before the reactor runs
(see ``tls.ensure_self_signed_pem``).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Lifetime of a generated certificate (about ten years).
_VALIDITY = datetime.timedelta(days=3650)
#: Back-dating of notBefore, so that clients whose clock is a little behind
#: ours do not reject a certificate generated a moment ago.
_BACKDATE = datetime.timedelta(days=1)
#: RFC 5280 upper bound for a commonName.  cryptography refuses longer
#: values, and host names can legitimately be longer (up to 253 chars).
_CN_MAX = 64


def _dns_name(hostname: str) -> str | None:
    """The ASCII (IDNA) form of *hostname* for a DNS SAN, or None if invalid."""
    try:
        ascii_name = hostname.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return ascii_name or None


def generate(hostname: str) -> bytes:
    """Return a PEM bundle: new EC P-256 key + self-signed certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    public_key = key.public_key()

    dns_names: list[str] = []
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    try:
        # Someone may pass an address as "host name": an IP SAN, not a DNS one.
        host_ip = ipaddress.ip_address(hostname)
    except ValueError:
        host_dns = _dns_name(hostname)
        if host_dns is not None:
            dns_names.append(host_dns)
    else:
        if host_ip not in ips:
            ips.append(host_ip)
    if "localhost" not in (n.lower() for n in dns_names):
        dns_names.append("localhost")

    # Truncate the CN (see _CN_MAX); clients match the SAN, not the CN.
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:_CN_MAX])])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            # ECDSA server key: it signs the handshake (digitalSignature);
            # keyAgreement covers static-ECDH clients.
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names] + [x509.IPAddress(ip) for ip in ips]),
            critical=False,
        )
        # Key identifiers: strict verifiers (e.g. Python >= 3.13's default
        # VERIFY_X509_STRICT) expect them when the certificate is used as
        # its own trust anchor.
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem + cert.public_bytes(serialization.Encoding.PEM)


def write_atomically(path: str, data: bytes) -> None:
    """Write *data* to *path* with mode 0600, all or nothing.

    A temporary file in the same directory (so that ``os.replace`` is an
    atomic rename on the same file system) is written, flushed to disk and
    renamed over *path*: a crash never leaves a truncated bundle behind,
    and the key is never readable by others, not even for an instant
    (``mkstemp`` creates the file 0600).
    """
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    # Make the rename itself durable.
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
