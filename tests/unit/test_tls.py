"""Tests of imgfac_twisted.web.tls without a network: self-signed generation, PEM loading
and the server context factory (real handshakes: tests/integration/test_tls_handshake.py)."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet.ssl import CertificateOptions

from imgfac_twisted.errors import ConfigError
from imgfac_twisted.web import tls
from support.pem_material import cert_pem, key_base64_lines, key_pem, make_cert, write_file

# --------------------------------------------------------------------------
# Self-signed generation
# --------------------------------------------------------------------------


def test_generate_creates_private_file_in_private_dir(tmp_path):
    """ensure_self_signed_pem writes <state>/tls/imagefactory.pem, file 0600, dir 0700."""
    old_umask = os.umask(0o022)  # a permissive umask must not leak into modes
    try:
        path = tls.ensure_self_signed_pem(str(tmp_path), hostname="factory.example.com")
    finally:
        os.umask(old_umask)
    assert path == str(tmp_path / "tls" / "imagefactory.pem")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "tls").st_mode) == 0o700
    # No temporary file is left behind by the atomic write.
    assert os.listdir(tmp_path / "tls") == ["imagefactory.pem"]
    data = Path(path).read_bytes()
    assert b"-----BEGIN PRIVATE KEY-----" in data
    assert b"-----BEGIN CERTIFICATE-----" in data


def test_generated_certificate_properties(tmp_path):
    """The generated cert: SHA-256, EC P-256 key, CN/SANs, not a CA, serverAuth, ~10 years."""
    before = datetime.datetime.now(datetime.UTC)
    path = tls.ensure_self_signed_pem(str(tmp_path), hostname="factory.example.com")
    material = tls.load_pem(path)
    cert, key = material.certificate, material.key

    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert material.chain == []

    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ("factory.example.com")
    assert cert.issuer == cert.subject
    # Really self-signed: the signature verifies with the cert's own key.
    cert.verify_directly_issued_by(cert)

    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = san.get_values_for_type(x509.DNSName)
    ips = san.get_values_for_type(x509.IPAddress)
    assert "factory.example.com" in dns
    assert "localhost" in dns
    assert ipaddress.ip_address("127.0.0.1") in ips
    assert ipaddress.ip_address("::1") in ips

    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]

    day = datetime.timedelta(days=1)
    minute = datetime.timedelta(minutes=1)
    assert before - day - minute <= cert.not_valid_before_utc <= before - day + minute
    lifetime = cert.not_valid_after_utc - before
    assert datetime.timedelta(days=9 * 365) < lifetime < datetime.timedelta(days=11 * 365)


def test_default_hostname_is_gethostname(tmp_path, monkeypatch):
    """Without a hostname argument, CN and a DNS SAN come from socket.gethostname()."""
    monkeypatch.setattr(tls.socket, "gethostname", lambda: "builder42.lab.example")
    path = tls.ensure_self_signed_pem(str(tmp_path))
    cert = tls.load_pem(path).certificate
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ("builder42.lab.example")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {
        "builder42.lab.example",
        "localhost",
    }


def test_long_hostname_truncates_cn_but_not_san(tmp_path):
    """A host name longer than 64 chars still works: CN truncated, full name in SAN."""
    long_name = ".".join(["a" * 60, "b" * 60, "example"])
    path = tls.ensure_self_signed_pem(str(tmp_path), hostname=long_name)
    cert = tls.load_pem(path).certificate
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == long_name[:64]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert long_name in san.get_values_for_type(x509.DNSName)


def test_second_call_reuses_existing_pem(tmp_path):
    """A second call returns the same file untouched (same bytes, same fingerprint)."""
    first = tls.ensure_self_signed_pem(str(tmp_path), hostname="one.example")
    content = Path(first).read_bytes()
    fingerprint = tls.certificate_fingerprint(first)
    inode = os.stat(first).st_ino

    # Even with another host name: the existing bundle is reused as is.
    second = tls.ensure_self_signed_pem(str(tmp_path), hostname="two.example")
    assert second == first
    assert Path(second).read_bytes() == content
    assert os.stat(second).st_ino == inode
    assert tls.certificate_fingerprint(second) == fingerprint


def test_unusable_existing_pem_is_replaced(tmp_path):
    """A garbage file at the self-signed path is replaced by a fresh, valid bundle."""
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    (tls_dir / "imagefactory.pem").write_bytes(b"not a pem at all\n")
    path = tls.ensure_self_signed_pem(str(tmp_path), hostname="h.example")
    material = tls.load_pem(path)  # would raise ConfigError if still garbage
    assert isinstance(material.certificate, x509.Certificate)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_unwritable_state_dir_is_config_error(tmp_path):
    """A state directory that cannot hold tls/ gives ConfigError naming the path."""
    blocker = tmp_path / "state"
    blocker.write_bytes(b"a file, not a directory")
    with pytest.raises(ConfigError) as info:
        tls.ensure_self_signed_pem(str(blocker), hostname="h.example")
    assert str(blocker / "tls") in str(info.value)


# --------------------------------------------------------------------------
# Loading errors
# --------------------------------------------------------------------------


def _assert_config_error(path: str, *words: str, secret_key=None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        tls.load_pem(path)
    message = str(info.value)
    assert path in message
    for word in words:
        assert word in message, message
    if secret_key is not None:
        for line in key_base64_lines(secret_key):
            assert line not in message
    # Exceptions are raised "from None": nothing from a parser is chained.
    assert info.value.__cause__ is None
    return info.value


def test_load_missing_file(tmp_path):
    """A PEM path that does not exist raises ConfigError naming it."""
    _assert_config_error(str(tmp_path / "nope.pem"), "does not exist")


def test_load_directory(tmp_path):
    """A directory given as PEM path raises ConfigError naming it."""
    _assert_config_error(str(tmp_path), "directory")


def test_load_garbage_file(tmp_path):
    """A file with no PEM blocks raises ConfigError naming it."""
    path = write_file(tmp_path / "garbage.pem", os.urandom(512) + b"\nhello\n")
    _assert_config_error(path, "no PEM certificate or private key")


def test_load_cert_only(tmp_path):
    """A PEM with a certificate but no key raises ConfigError ("no private key")."""
    key = ec.generate_private_key(ec.SECP256R1())
    path = write_file(tmp_path / "cert.pem", cert_pem(make_cert(key, "localhost")))
    _assert_config_error(path, "no private key")


def test_load_key_only(tmp_path):
    """A PEM with a key but no certificate raises ConfigError ("no certificate")."""
    key = ec.generate_private_key(ec.SECP256R1())
    path = write_file(tmp_path / "key.pem", key_pem(key))
    _assert_config_error(path, "no certificate", secret_key=key)


def test_load_mismatched_key_and_cert(tmp_path):
    """A key that is not the certificate's raises ConfigError ("does not match")."""
    cert_key = ec.generate_private_key(ec.SECP256R1())
    other_key = ec.generate_private_key(ec.SECP256R1())
    path = write_file(
        tmp_path / "mismatch.pem",
        key_pem(other_key) + cert_pem(make_cert(cert_key, "localhost")),
    )
    _assert_config_error(path, "does not match", secret_key=other_key)


def test_load_corrupt_key_block_does_not_leak_it(tmp_path):
    """A damaged private-key block is a ConfigError whose message quotes none of it."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key_pem(key).decode().splitlines()
    # Damage the middle of the base64 body, keep the framing.
    pem[2] = pem[2][:10] + "!!!!" + pem[2][14:]
    cert = cert_pem(make_cert(key, "localhost"))
    path = write_file(tmp_path / "corrupt.pem", cert + ("\n".join(pem) + "\n").encode())
    _assert_config_error(path, "not a valid private key", secret_key=key)


def test_load_encrypted_key(tmp_path):
    """An encrypted private key is refused with ConfigError ("encrypted")."""
    key = ec.generate_private_key(ec.SECP256R1())
    path = write_file(
        tmp_path / "enc.pem",
        cert_pem(make_cert(key, "localhost")) + key_pem(key, password=b"s3cret"),
    )
    _assert_config_error(path, "encrypted")


def test_load_two_keys(tmp_path):
    """A PEM with two private keys is ambiguous and refused."""
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    path = write_file(
        tmp_path / "two.pem",
        key_pem(key) + key_pem(other) + cert_pem(make_cert(key, "localhost")),
    )
    _assert_config_error(path, "2 private keys")


def test_load_operator_chain_finds_leaf_and_intermediate(operator_chain):
    """With leaf, intermediate and key (any order) the leaf is the key's cert, the rest is chain."""
    material = tls.load_pem(operator_chain["bundle"])
    assert material.certificate == operator_chain["leaf"]
    assert material.chain == [operator_chain["inter"]]
    assert isinstance(material.key, rsa.RSAPrivateKey)
    assert material.key.key_size >= 2048


# --------------------------------------------------------------------------
# Fingerprint and context factory
# --------------------------------------------------------------------------


def test_certificate_fingerprint_is_sha256_of_der(tmp_path):
    """certificate_fingerprint is the SHA-256 of the cert's DER, upper-case hex with colons."""
    path = tls.ensure_self_signed_pem(str(tmp_path), hostname="h.example")
    fingerprint = tls.certificate_fingerprint(path)
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", fingerprint)
    der = tls.load_pem(path).certificate.public_bytes(serialization.Encoding.DER)
    assert fingerprint.replace(":", "").lower() == hashlib.sha256(der).hexdigest()


def test_certificate_fingerprint_bad_file(tmp_path):
    """certificate_fingerprint of a missing file raises ConfigError naming it."""
    path = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match=re.escape(path)):
        tls.certificate_fingerprint(path)


def test_server_context_factory_refuses_old_tls(tmp_path):
    """The server context disables SSLv3, TLS 1.0 and 1.1 and keeps TLS 1.2/1.3."""
    path = tls.ensure_self_signed_pem(str(tmp_path), hostname="h.example")
    options = tls.server_context_factory(path)
    assert isinstance(options, CertificateOptions)
    # set_options(0) adds nothing and returns the context's current options.
    flags = options.getContext().set_options(0)
    assert flags & SSL.OP_NO_SSLv3
    assert flags & SSL.OP_NO_TLSv1
    assert flags & SSL.OP_NO_TLSv1_1
    assert not flags & SSL.OP_NO_TLSv1_2
    assert not flags & getattr(SSL, "OP_NO_TLSv1_3", 0)


def test_server_context_factory_bad_pem_is_config_error(tmp_path):
    """server_context_factory on a cert-only PEM raises ConfigError naming the file."""
    key = ec.generate_private_key(ec.SECP256R1())
    path = write_file(tmp_path / "cert.pem", cert_pem(make_cert(key, "localhost")))
    with pytest.raises(ConfigError, match=re.escape(path)):
        tls.server_context_factory(path)
