"""PEM material for the TLS tests, built with cryptography: certificates, keys, an operator's chain."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(
    subject_key,
    subject_cn: str,
    issuer_key=None,
    issuer_cn: str | None = None,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    """A certificate for *subject_key*, signed by *issuer_key* (self if None)."""
    issuer_key = issuer_key or subject_key
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject_cn))
        .issuer_name(name(issuer_cn or subject_cn))
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key, password: bytes | None = None) -> bytes:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def key_base64_lines(key) -> list[str]:
    """The base64 lines of the key's PEM (what must never be in a message)."""
    return [line for line in key_pem(key).decode().splitlines() if line and not line.startswith("-----")]


def write_file(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def operator_chain(d: Path) -> dict[str, str | object]:
    """An "--ssl_pem" bundle built in folder *d*: root CA -> intermediate -> leaf.

    The bundle holds the leaf, the intermediate and (last, to check that
    order does not matter) the RSA-2048 leaf key; the root is written to a
    separate file, the only thing a client trusts.
    """
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = make_cert(root_key, "Test Root CA", ca=True)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = make_cert(inter_key, "Test Intermediate", root_key, "Test Root CA", ca=True)
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = make_cert(
        leaf_key,
        "localhost",
        inter_key,
        "Test Intermediate",
        sans=[
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ],
    )
    bundle = write_file(d / "server.pem", cert_pem(leaf) + cert_pem(inter) + key_pem(leaf_key))
    root_file = write_file(d / "root.pem", cert_pem(root))
    return {"bundle": bundle, "root": root_file, "leaf": leaf, "inter": inter}
