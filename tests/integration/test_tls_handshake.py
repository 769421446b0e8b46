"""Real TLS handshakes against imgfac_twisted.web.tls's context factory, served by a Twisted server in a subprocess."""

from __future__ import annotations

import hashlib
import os
import select
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives import serialization

from imgfac_twisted.web import tls

# Bounds for everything that waits on the server subprocess.
SERVER_START_TIMEOUT = 30.0
IO_TIMEOUT = 10.0


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
            conn.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
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
