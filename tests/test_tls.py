"""Tests of imgfac_twisted.web.tls: self-signed generation, PEM loading,
the server context factory, and real TLS handshakes against a Twisted
server running in a subprocess."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import re
import select
import socket
import ssl
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL

from twisted.internet.ssl import CertificateOptions  # noqa: E402

from imgfac_twisted.errors import ConfigError  # noqa: E402
from imgfac_twisted.web import tls  # noqa: E402

# Bounds for everything that waits on the server subprocess.
SERVER_START_TIMEOUT = 30.0
IO_TIMEOUT = 10.0


# --------------------------------------------------------------------------
# Helpers building test PEM material with cryptography
# --------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _make_cert(
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
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject_cn))
        .issuer_name(_name(issuer_cn or subject_cn))
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.BasicConstraints(ca=ca, path_length=None), critical=True
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer_key.public_key()
            ),
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
        builder = builder.add_extension(
            x509.SubjectAlternativeName(sans), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key, password: bytes | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _key_base64_lines(key) -> list[str]:
    """The base64 lines of the key's PEM (what must never be in a message)."""
    return [
        line
        for line in _key_pem(key).decode().splitlines()
        if line and not line.startswith("-----")
    ]


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.fixture(scope="module")
def operator_chain(tmp_path_factory) -> dict[str, str | object]:
    """An "--ssl_pem" bundle built here: root CA -> intermediate -> leaf.

    The bundle holds the leaf, the intermediate and (last, to check that
    order does not matter) the RSA-2048 leaf key; the root is written to a
    separate file, the only thing a client trusts.
    """
    d = tmp_path_factory.mktemp("operator")
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _make_cert(root_key, "Test Root CA", ca=True)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = _make_cert(inter_key, "Test Intermediate", root_key, "Test Root CA", ca=True)
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = _make_cert(
        leaf_key,
        "localhost",
        inter_key,
        "Test Intermediate",
        sans=[
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ],
    )
    bundle = _write(d / "server.pem", _cert_pem(leaf) + _cert_pem(inter) + _key_pem(leaf_key))
    root_file = _write(d / "root.pem", _cert_pem(root))
    return {"bundle": bundle, "root": root_file, "leaf": leaf, "inter": inter}


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
    before = datetime.datetime.now(datetime.timezone.utc)
    path = tls.ensure_self_signed_pem(str(tmp_path), hostname="factory.example.com")
    material = tls.load_pem(path)
    cert, key = material.certificate, material.key

    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert material.chain == []

    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "factory.example.com"
    )
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
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "builder42.lab.example"
    )
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
        for line in _key_base64_lines(secret_key):
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
    path = _write(tmp_path / "garbage.pem", os.urandom(512) + b"\nhello\n")
    _assert_config_error(path, "no PEM certificate or private key")


def test_load_cert_only(tmp_path):
    """A PEM with a certificate but no key raises ConfigError ("no private key")."""
    key = ec.generate_private_key(ec.SECP256R1())
    path = _write(tmp_path / "cert.pem", _cert_pem(_make_cert(key, "localhost")))
    _assert_config_error(path, "no private key")


def test_load_key_only(tmp_path):
    """A PEM with a key but no certificate raises ConfigError ("no certificate")."""
    key = ec.generate_private_key(ec.SECP256R1())
    path = _write(tmp_path / "key.pem", _key_pem(key))
    _assert_config_error(path, "no certificate", secret_key=key)


def test_load_mismatched_key_and_cert(tmp_path):
    """A key that is not the certificate's raises ConfigError ("does not match")."""
    cert_key = ec.generate_private_key(ec.SECP256R1())
    other_key = ec.generate_private_key(ec.SECP256R1())
    path = _write(
        tmp_path / "mismatch.pem",
        _key_pem(other_key) + _cert_pem(_make_cert(cert_key, "localhost")),
    )
    _assert_config_error(path, "does not match", secret_key=other_key)


def test_load_corrupt_key_block_does_not_leak_it(tmp_path):
    """A damaged private-key block is a ConfigError whose message quotes none of it."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = _key_pem(key).decode().splitlines()
    # Damage the middle of the base64 body, keep the framing.
    pem[2] = pem[2][:10] + "!!!!" + pem[2][14:]
    cert = _cert_pem(_make_cert(key, "localhost"))
    path = _write(tmp_path / "corrupt.pem", cert + ("\n".join(pem) + "\n").encode())
    _assert_config_error(path, "not a valid private key", secret_key=key)


def test_load_encrypted_key(tmp_path):
    """An encrypted private key is refused with ConfigError ("encrypted")."""
    key = ec.generate_private_key(ec.SECP256R1())
    path = _write(
        tmp_path / "enc.pem",
        _cert_pem(_make_cert(key, "localhost")) + _key_pem(key, password=b"s3cret"),
    )
    _assert_config_error(path, "encrypted")


def test_load_two_keys(tmp_path):
    """A PEM with two private keys is ambiguous and refused."""
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    path = _write(
        tmp_path / "two.pem",
        _key_pem(key) + _key_pem(other) + _cert_pem(_make_cert(key, "localhost")),
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
    path = _write(tmp_path / "cert.pem", _cert_pem(_make_cert(key, "localhost")))
    with pytest.raises(ConfigError, match=re.escape(path)):
        tls.server_context_factory(path)


# --------------------------------------------------------------------------
# Real handshakes against a Twisted server in a subprocess
# --------------------------------------------------------------------------

_SERVER_SCRIPT = textwrap.dedent(
    """
    import sys
    from twisted.internet import reactor
    from twisted.web.resource import Resource
    from twisted.web.server import Site
    from imgfac_twisted.web.tls import server_context_factory

    class Hello(Resource):
        isLeaf = True
        def render_GET(self, request):
            request.setHeader(b"content-type", b"text/plain")
            return b"hello over tls"

    factory = server_context_factory(sys.argv[1])
    port = reactor.listenSSL(0, Site(Hello()), factory, interface="127.0.0.1")
    # Tell the test which port the kernel picked (no free-port race).
    sys.stdout.write("%d\\n" % port.getHost().port)
    sys.stdout.flush()
    reactor.run()
    """
)


@pytest.fixture
def tls_server(tmp_path) -> Iterator[Callable[[str], int]]:
    """Start Twisted TLS servers for PEM files; they are always killed at teardown."""
    procs: list[subprocess.Popen] = []

    def start(pem_path: str) -> int:
        env = dict(os.environ)
        stderr = tempfile.TemporaryFile(dir=tmp_path)
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER_SCRIPT, pem_path],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
        procs.append(proc)

        def failure(why: str) -> str:
            stderr.seek(0)
            return f"{why}; server stderr:\n{stderr.read().decode(errors='replace')}"

        # Bounded wait for the port line.
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        line = b""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(failure(f"server exited with {proc.returncode}"))
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                line = proc.stdout.readline()
                break
        if not line.strip().isdigit():
            pytest.fail(failure(f"server did not report its port (got {line!r})"))
        port = int(line)

        # Bounded retry until the port accepts TCP connections.
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(failure(f"port {port} never accepted connections"))
                time.sleep(0.1)

    yield start

    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=IO_TIMEOUT)
        proc.stdout.close()


def _https_get(port: int, context: ssl.SSLContext, server_hostname: str):
    """GET / over TLS; returns (status line, body, TLS version, peer cert DER)."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as conn:
            conn.sendall(
                b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            chunks = []
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            version = conn.version()
            peer = conn.getpeercert(binary_form=True)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], body, version, peer


def test_handshake_with_self_signed_cert_verifies(tmp_path, tls_server):
    """A verifying client trusting the generated PEM connects to "localhost" and gets 200."""
    pem = tls.ensure_self_signed_pem(str(tmp_path), hostname="factory.example")
    port = tls_server(pem)
    context = ssl.create_default_context(cafile=pem)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED

    status, body, version, peer = _https_get(port, context, "localhost")
    assert status == b"HTTP/1.1 200 OK"
    assert body == b"hello over tls"
    assert version in ("TLSv1.2", "TLSv1.3")
    # What the client sees is what the daemon would log.
    expected = tls.certificate_fingerprint(pem).replace(":", "").lower()
    assert hashlib.sha256(peer).hexdigest() == expected

    # The IP SAN verifies too.
    status, _, _, _ = _https_get(port, context, "127.0.0.1")
    assert status == b"HTTP/1.1 200 OK"

    # And so does a strict verifier (Python >= 3.13's default flags).
    strict = ssl.create_default_context(cafile=pem)
    strict.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
    status, _, _, _ = _https_get(port, strict, "localhost")
    assert status == b"HTTP/1.1 200 OK"


def test_handshake_checks_host_name(tmp_path, tls_server):
    """Verification is real: a name not in the SANs is rejected by the client."""
    pem = tls.ensure_self_signed_pem(str(tmp_path), hostname="factory.example")
    port = tls_server(pem)
    context = ssl.create_default_context(cafile=pem)
    with pytest.raises(ssl.SSLCertVerificationError):
        _https_get(port, context, "not-this-host.example")


def test_handshake_tls12_accepted(tmp_path, tls_server):
    """A client capped at TLS 1.2 completes the handshake (1.2 is the floor, not excluded)."""
    pem = tls.ensure_self_signed_pem(str(tmp_path), hostname="factory.example")
    port = tls_server(pem)
    context = ssl.create_default_context(cafile=pem)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    status, _, version, _ = _https_get(port, context, "localhost")
    assert status == b"HTTP/1.1 200 OK"
    assert version == "TLSv1.2"


def test_handshake_tls11_client_fails(tmp_path, tls_server):
    """A client limited to TLS 1.0/1.1 cannot complete a handshake with the server."""
    pem = tls.ensure_self_signed_pem(str(tmp_path), hostname="factory.example")
    port = tls_server(pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        # OpenSSL 3 forbids TLS < 1.2 at security level >= 1: drop to 0 so
        # the client really offers TLS 1.1 where the library still can.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    try:
        with warnings.catch_warnings():
            # Python flags these versions as deprecated: exactly the point.
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this Python/OpenSSL cannot even configure a TLS 1.1 client")
    # Whether the server refuses (protocol_version alert) or the local
    # OpenSSL refuses to offer 1.1 at all, the handshake must not succeed.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _https_get(port, context, "localhost")


def _raw_tls11_client_hello() -> bytes:
    """A minimal TLS 1.1 ClientHello, built by hand (independent of local OpenSSL)."""
    suites = [0xC02B, 0xC02F, 0xC009, 0xC013, 0xC00A, 0xC014, 0x002F, 0x0035]
    extensions = (
        # supported_groups: secp256r1
        struct.pack("!HHHH", 0x000A, 4, 2, 0x0017)
        # ec_point_formats: uncompressed
        + struct.pack("!HHBB", 0x000B, 2, 1, 0)
    )
    body = (
        struct.pack("!H", 0x0302)  # client_version TLS 1.1
        + os.urandom(32)
        + b"\x00"  # empty session id
        + struct.pack("!H", 2 * len(suites))
        + b"".join(struct.pack("!H", s) for s in suites)
        + b"\x01\x00"  # compression: null
        + struct.pack("!H", len(extensions))
        + extensions
    )
    handshake = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16" + struct.pack("!HH", 0x0301, len(handshake)) + handshake


def test_server_answers_tls11_hello_with_protocol_version_alert(tmp_path, tls_server):
    """A hand-made TLS 1.1 ClientHello gets no ServerHello: an alert (or a close)."""
    pem = tls.ensure_self_signed_pem(str(tmp_path), hostname="factory.example")
    port = tls_server(pem)
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(_raw_tls11_client_hello())
        reply = b""
        try:
            while len(reply) < 7:
                chunk = sock.recv(7 - len(reply))
                if not chunk:
                    break
                reply += chunk
        except ConnectionResetError:
            pass
    # 0x16 would be a handshake record, i.e. a ServerHello: must not happen.
    assert not reply.startswith(b"\x16"), reply
    if reply:
        assert reply[0] == 0x15, reply  # alert record
        assert reply[5] == 2, reply  # level: fatal
        assert reply[6] == 70, reply  # description: protocol_version


def test_operator_pem_with_chain_serves(operator_chain, tls_server):
    """An --ssl_pem bundle made with cryptography serves, intermediate included.

    The client trusts only the root, so the handshake succeeds only if the
    server sends the intermediate (extraCertChain).
    """
    port = tls_server(operator_chain["bundle"])
    context = ssl.create_default_context(cafile=operator_chain["root"])
    status, body, _, peer = _https_get(port, context, "localhost")
    assert status == b"HTTP/1.1 200 OK"
    assert body == b"hello over tls"
    assert peer == operator_chain["leaf"].public_bytes(serialization.Encoding.DER)
