"""vcsim, VMware's vCenter simulator (govmomi), on loopback: the tests' vSphere peer.

Debian's ``golang-github-vmware-govmomi-dev`` holds the simulator's source
but no command: ``tests/support/vcsim/main.go`` (the project's own) starts
it, built once with Debian's ``golang-go`` in GOPATH mode and cached under
``~/.cache/imgfac-test/`` (both packages are apt-get installed when
missing).  vcsim serves the default VPX inventory (DC0, cluster DC0_C0,
datastore LocalDS_0, "VM Network") over TLS with a certificate of a test CA.

vcsim accepts the whole OVF import but discards the uploaded disk unread,
so a proxy (:class:`NfcProxy`, also TLS, same CA) stands in front of it: it
forwards everything and hashes each body PUT or POSTed to ``/nfc/``; it can
also stall or fail those uploads.  The ``vcsim`` fixture
(tests/integration/conftest.py) starts both once per test session.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from .daemon import free_port
from .pem_material import cert_pem, key_pem, make_cert
from .proxying import injected_failure, relay, serve

CACHE = Path(os.environ.get("IMGFAC_TEST_CACHE", Path.home() / ".cache" / "imgfac-test"))
MAIN_GO = Path(__file__).resolve().parent / "vcsim" / "main.go"
GOCODE = Path("/usr/share/gocode")
GOVMOMI = GOCODE / "src" / "github.com" / "vmware" / "govmomi"
APT_PACKAGES = ("golang-go", "golang-github-vmware-govmomi-dev")
USER = "vsphere-pusher@vsphere.local"
#: Distinctive, so a test can search for it in logs and answers.
PASSWORD = "vc-PASSWORD-8d2f4a61c3-DistinctiveValue"
START_TIMEOUT = 30.0
PIECE = 1024 * 1024


def say(message: str) -> None:
    """Progress on the terminal even while pytest captures output (the first build takes a while)."""
    print(f"[vcsim peer] {message}", file=sys.__stderr__, flush=True)


def ensure_built() -> Path:
    """The vcsim binary, built from main.go and Debian's govmomi source unless already cached."""
    if not (GOVMOMI.is_dir() and shutil.which("go")):
        say(f"apt-get installing {' '.join(APT_PACKAGES)}")
        environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-q", *APT_PACKAGES]
        if subprocess.run(install, env=environment).returncode != 0:
            # A fresh machine's package lists may be empty.
            subprocess.run(["apt-get", "update", "-q"], check=True, env=environment)
            subprocess.run(install, check=True, env=environment)
    version = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", APT_PACKAGES[1]], capture_output=True, text=True, check=True
    ).stdout
    key = hashlib.sha256(MAIN_GO.read_bytes() + version.encode()).hexdigest()[:16]
    binary = CACHE / f"vcsim-{key}" / "vcsim"
    if binary.exists():
        return binary
    say(f"building vcsim (govmomi {version}) into {binary.parent} (once; about a minute)")
    begun = time.monotonic()
    work = CACHE / f"vcsim-{key}.build"
    shutil.rmtree(work, ignore_errors=True)
    source = work / "src" / "imgfacvcsim"
    source.mkdir(parents=True)
    shutil.copy(MAIN_GO, source / "main.go")
    environment = dict(
        os.environ, GO111MODULE="off", GOPATH=f"{work}:{GOCODE}", GOCACHE=str(work / "cache"), GOFLAGS=""
    )
    binary.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["go", "build", "-o", str(binary) + ".tmp", "."], cwd=source, env=environment, check=True)
    os.replace(str(binary) + ".tmp", binary)
    shutil.rmtree(work, ignore_errors=True)
    say(f"built in {time.monotonic() - begun:.0f} s")
    return binary


def write_tls(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA and a certificate for 127.0.0.1 signed by it: (ca file, certificate file, key file)."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = make_cert(ca_key, "imgfac vcsim test CA", ca=True)
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    leaf = make_cert(key, "127.0.0.1", ca_key, "imgfac vcsim test CA", sans=sans)
    paths = folder / "ca.pem", folder / "vcsim.pem", folder / "vcsim-key.pem"
    paths[0].write_bytes(cert_pem(ca))
    paths[1].write_bytes(cert_pem(leaf))
    paths[2].write_bytes(key_pem(key))
    return paths


@dataclass
class Upload:
    """One body sent to /nfc/ through the proxy."""

    method: str
    path: str
    size: int
    sha256: str
    #: Whether the vCenter session's cookie came with it.
    session: bool = False


class NfcProxy:
    """A TLS proxy in front of vcsim: hashes /nfc/ uploads; ``mode`` "stall" or "fail" stops them."""

    def __init__(self, upstream_port: int, ca: Path, cert: Path, key: Path) -> None:
        self.mode = ""
        self.uploads: list[Upload] = []
        self.stalled = 0
        self.release = threading.Event()
        upstream_tls = ssl.create_default_context(cafile=str(ca))
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def handle_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if self.path.startswith("/nfc/") and self.command in ("PUT", "POST"):
                    if proxy.mode:
                        self._refuse(length)
                        return
                    session = "vmware_soap_session=" in (self.headers.get("Cookie") or "")
                    body: Any = proxy.hashed(self.command, self.path, self.rfile, length, session)
                else:
                    body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPSConnection("127.0.0.1", upstream_port, timeout=60, context=upstream_tls)
                relay(self, upstream, body)

            def _refuse(self, length: int) -> None:
                if proxy.mode == "stall":
                    proxy.stalled += 1
                    proxy.release.wait(60)
                else:
                    # Read first, as a host refusing a corrupt disk does: the answer then always arrives.
                    for _ in proxy.hashed(self.command, self.path, self.rfile, length, False):
                        pass
                    proxy.uploads.pop()
                injected_failure(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self.server = serve(Handler, "vcsim-proxy", context)
        self.port = self.server.server_address[1]

    def hashed(self, method: str, path: str, stream: Any, length: int, session: bool) -> Iterator[bytes]:
        """An upload's body, passed on piece by piece, its size and SHA-256 recorded at its end."""
        digest, size, left = hashlib.sha256(), 0, length
        while left:
            piece = stream.read(min(PIECE, left))
            if not piece:
                break
            digest.update(piece)
            size += len(piece)
            left -= len(piece)
            yield piece
        self.uploads.append(Upload(method, path, size, digest.hexdigest(), session))

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class VcsimPeer:
    """vcsim on a loopback port with TLS and one user, and the hashing proxy in front of it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.binary = ensure_built()
        self.ca, self.cert, self.key = write_tls(workdir)
        self.vcsim_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.proxy: NfcProxy | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        """The SDK URL clients use (the proxy's)."""
        assert self.proxy is not None
        return f"https://127.0.0.1:{self.proxy.port}/sdk"

    def start(self) -> None:
        begun = time.monotonic()
        self._log = open(self.workdir / "vcsim.log", "wb")
        command = [str(self.binary), "-listen", f"127.0.0.1:{self.vcsim_port}", "-username", USER]
        command += ["-password", PASSWORD, "-cert", str(self.cert), "-key", str(self.key)]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while "VCSIM_URL=" not in self.log_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"vcsim did not start:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)
        self.proxy = NfcProxy(self.vcsim_port, self.ca, self.cert, self.key)
        say(f"vcsim on 127.0.0.1:{self.vcsim_port}, proxied at {self.url}, up in {time.monotonic() - begun:.1f} s")

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._log is not None:
            self._log.close()

    def log_text(self) -> str:
        path = self.workdir / "vcsim.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- reading the inventory -------------------------------------------------

    def connect(self) -> Any:
        """A pyVmomi ServiceInstance logged in to vcsim directly (not through the proxy)."""
        from pyVim.connect import SmartConnect

        context = ssl.create_default_context(cafile=str(self.ca))
        return SmartConnect(host="127.0.0.1", port=self.vcsim_port, user=USER, pwd=PASSWORD, sslContext=context)

    def vms(self) -> dict[str, dict[str, Any]]:
        """Every VM by managed object id: its name, whether a template, its folder's name."""
        from pyVim.connect import Disconnect
        from pyVmomi import vim, vmodl

        service = self.connect()
        try:
            content = service.RetrieveContent()
            view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
            found = {}
            for vm in view.view:
                try:
                    found[vm._moId] = {"name": vm.name, "template": vm.config.template, "folder": vm.parent.name}
                except vmodl.fault.ManagedObjectNotFound:
                    continue  # vcsim's view may still list a VM just destroyed
            view.Destroy()
            return found
        finally:
            Disconnect(service)

    def vms_named(self, fragment: str) -> list[dict[str, Any]]:
        """The VMs whose name holds ``fragment`` (a push's VM holds its id's first 8 characters)."""
        return [dict(vm, id=moid) for moid, vm in self.vms().items() if fragment in vm["name"]]

    def destroy(self, moid: str) -> None:
        """Destroy a VM behind the factory's back (as an operator might)."""
        from pyVim.connect import Disconnect
        from pyVim.task import WaitForTask
        from pyVmomi import vim

        service = self.connect()
        try:
            WaitForTask(vim.VirtualMachine(moid, service._stub).Destroy_Task())
        finally:
            Disconnect(service)
