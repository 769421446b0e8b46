"""Blocking calls to vCenter (pyVmomi), run on the cloud door.

- :func:`connect` logs in and finds the site's datacenter, cluster (its
  resource pool), datastore, folder and network;
- :func:`call` runs one call and turns every error into a
  :class:`VSphereError` naming the site, the call and vCenter's words (or
  why it could not be reached), never a secret;
- the import's steps: :func:`import_spec`, :func:`start_import`,
  :func:`finish_import`, :func:`abort_lease`, :func:`destroy_vm`.
"""

from __future__ import annotations

import http.client
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..errors import ImageFactoryError
from ..redaction import scrub
from . import Credentials
from .vsphere_disk import network_names
from .vsphere_sites import Site

T = TypeVar("T")

#: Seconds a connection or a read may take before a call fails.
CALL_TIMEOUT = 60.0
#: How long a lease may stay ``initializing`` (seconds), and the pause between looks.
LEASE_READY_WAIT = 120.0
LEASE_POLL = 0.2
#: The version list is a few hundred bytes.
MAX_PROBE_BYTES = 64 * 1024


class VSphereError(ImageFactoryError):
    """A push to (or removal from) vSphere failed; the message says which call and why (never a secret)."""


class Refused(ImageFactoryError):
    """vCenter or a host said no; :func:`call` puts the site and the call before the message."""


class UploadStopped(Exception):
    """The upload was stopped (the push is cancelled or failing)."""


@dataclass
class Inventory:
    """A logged-in vCenter session and the site's objects in it."""

    service: Any
    pool: Any
    datastore: Any
    folder: Any
    network: Any | None
    context: ssl.SSLContext | None
    #: The session's cookie (sent with the disk to the vCenter's own host, as govmomi's cookie jar does).
    cookie: str = field(default="", repr=False)


def sdk() -> Any:
    """pyVmomi, untyped (imported when first used: a daemon with no vSphere provider never loads it)."""
    from pyVim import connect as pyvim_connect
    from pyVim import task as pyvim_task
    from pyVmomi import vim, vmodl

    return SimpleNamespace(vim=vim, vmodl=vmodl, connect=pyvim_connect, task=pyvim_task)


def tls_context(site: Site) -> ssl.SSLContext | None:
    """The context that verifies the vCenter (its ``ca_bundle``, else the system's CAs); None for http://."""
    if urlsplit(site.url).scheme != "https":
        return None
    return ssl.create_default_context(cafile=site.ca_bundle)


def connect(site: Site, credentials: Credentials, timeout: float = CALL_TIMEOUT) -> Inventory:
    """Log in to the site's vCenter and find its objects (blocking)."""
    vim = sdk().vim
    parts = urlsplit(site.url)
    context = tls_context(site)
    probe(site, context, timeout)
    service = sdk().connect.SmartConnect(
        protocol=parts.scheme,
        host=site.host,
        port=site.port,
        path=parts.path or "/sdk",
        user=credentials.secrets["username"],
        pwd=credentials.secrets["password"],
        sslContext=context,
        httpConnectionTimeout=timeout,
    )
    content = service.RetrieveContent()
    search = content.searchIndex
    datacenter = search.FindByInventoryPath(site.datacenter)
    if not isinstance(datacenter, vim.Datacenter):
        raise VSphereError(f"{site.name}: vCenter has no datacenter {site.datacenter!r}")
    cluster = search.FindByInventoryPath(f"{site.datacenter}/host/{site.cluster}")
    if not isinstance(cluster, vim.ComputeResource):
        raise VSphereError(f"{site.name}: datacenter {site.datacenter} has no cluster {site.cluster!r}")
    folder_path = site.folder if site.folder == "vm" or site.folder.startswith("vm/") else f"vm/{site.folder}"
    folder = search.FindByInventoryPath(f"{site.datacenter}/{folder_path}")
    if not isinstance(folder, vim.Folder):
        raise VSphereError(f"{site.name}: datacenter {site.datacenter} has no VM folder {site.folder!r}")
    datastore = _named(datacenter.datastore, site.datastore)
    if datastore is None:
        raise VSphereError(f"{site.name}: datacenter {site.datacenter} has no datastore {site.datastore!r}")
    network = None
    if site.network is not None:
        network = _named(datacenter.network, site.network)
        if network is None:
            raise VSphereError(f"{site.name}: datacenter {site.datacenter} has no network {site.network!r}")
    cookie = str(getattr(service._stub, "cookie", "") or "")
    return Inventory(service, cluster.resourcePool, datastore, folder, network, context, cookie)


def probe(site: Site, context: ssl.SSLContext | None, timeout: float) -> None:
    """GET the SDK's version list within ``timeout``: SmartConnect's own first request has no timeout.

    A host that takes the connection and never answers would otherwise hold
    the door's thread for ever.  Any answer will do (SmartConnect reads it again).
    """
    path = (urlsplit(site.url).path or "/sdk").rstrip("/") + "/vimServiceVersions.xml"
    connection: http.client.HTTPConnection
    if context is not None:
        connection = http.client.HTTPSConnection(site.host, site.port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(site.host, site.port, timeout=timeout)
    try:
        connection.request("GET", path)
        connection.getresponse().read(MAX_PROBE_BYTES)
    finally:
        connection.close()


def _named(objects: Any, name: str) -> Any | None:
    return next((item for item in objects if item.name == name), None)


def disconnect(inventory: Inventory) -> None:
    """Log out (blocking; errors ignored: the session expires anyway)."""
    try:
        sdk().connect.Disconnect(inventory.service)
    except Exception:
        pass


def secret_values(credentials: Credentials) -> tuple[str, ...]:
    """The values to hide wherever a message could show them (the password, not the user name)."""
    password = credentials.secrets.get("password", "")
    return (password,) if password else ()


def call(site: str, action: str, secrets: tuple[str, ...], fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``; any error becomes a VSphereError naming ``action`` (blocking)."""
    try:
        return fn(*args, **kwargs)
    except (VSphereError, UploadStopped):
        raise
    except ImageFactoryError as error:
        raise VSphereError(scrub(f"{site}: {action} failed: {error.message}", secrets)) from None
    except Exception as error:
        raise VSphereError(scrub(f"{site}: {action} failed: {describe(error)}", secrets)) from None


def describe(error: BaseException) -> str:
    """An error in a few words: what vCenter said, or why it could not be reached."""
    vim, vmodl = sdk().vim, sdk().vmodl
    if isinstance(error, vim.fault.InvalidLogin):
        return "vCenter refused the credentials (InvalidLogin)"
    if isinstance(error, vmodl.MethodFault):
        name = type(error).__name__.rsplit(".", 1)[-1]
        return f"{name}: {_first_line(getattr(error, 'msg', '') or name)}"
    if isinstance(error, OSError):
        return f"cannot reach the endpoint: {_first_line(error)}"
    return f"{type(error).__name__}: {_first_line(error)}"


def _first_line(error: BaseException | str) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:500]


def import_spec(inventory: Inventory, descriptor: str, vm_name: str) -> Any:
    """``OvfManager.CreateImportSpec`` for the site; Refused listing vCenter's errors (blocking)."""
    vim = sdk().vim
    mapping = []
    if inventory.network is not None:
        mapping = [
            vim.OvfManager.NetworkMapping(name=name, network=inventory.network) for name in network_names(descriptor)
        ]
    params = vim.OvfManager.CreateImportSpecParams(entityName=vm_name, networkMapping=mapping)
    manager = inventory.service.RetrieveContent().ovfManager
    result = manager.CreateImportSpec(descriptor, inventory.pool, inventory.datastore, params)
    if result.error:
        said = "; ".join(_first_line(getattr(fault, "msg", "") or type(fault).__name__) for fault in result.error)
        raise Refused(f"vCenter refused the OVF descriptor: {said}")
    return result


def start_import(inventory: Inventory, spec: Any) -> Any:
    """``ResourcePool.ImportVApp`` into the folder; the lease, once ready (blocking)."""
    vim = sdk().vim
    lease = inventory.pool.ImportVApp(spec.importSpec, inventory.folder)
    deadline = time.monotonic() + LEASE_READY_WAIT
    while lease.state == vim.HttpNfcLease.State.initializing:
        if time.monotonic() > deadline:
            raise Refused(f"the import lease is still initializing after {LEASE_READY_WAIT:.0f} s")
        time.sleep(LEASE_POLL)
    if lease.state != vim.HttpNfcLease.State.ready:
        raise Refused(f"the import lease is {lease.state}: {describe(lease.error) if lease.error else ''}")
    return lease


def lease_vm(lease: Any) -> Any:
    """The VM a ready lease imports into (blocking)."""
    return lease.info.entity


def device_url(lease: Any, site: Site) -> tuple[str, bool]:
    """The URL the disk goes to, with the site's host and port where vCenter wrote ``*``; its create flag."""
    disks = [device for device in lease.info.deviceUrl if device.disk]
    if len(disks) != 1:
        raise Refused(f"the import lease offers {len(disks)} disk URLs; one is expected")
    parts = urlsplit(disks[0].url)
    if parts.netloc == "*":
        parts = parts._replace(netloc=f"{site.host}:{site.port}")
    return urlunsplit(parts), bool(getattr(disks[0], "create", False))


def keep_alive(lease: Any, percent: int) -> None:
    """``HttpNfcLeaseProgress``: tells vCenter the upload is alive (blocking)."""
    lease.HttpNfcLeaseProgress(percent)


def finish_import(lease: Any, vm: Any) -> str:
    """Complete the lease and mark the VM a template; its managed object id (blocking)."""
    lease.HttpNfcLeaseProgress(100)
    lease.HttpNfcLeaseComplete()
    vm.MarkAsTemplate()
    return str(vm._moId)


def abort_lease(lease: Any, reason: str) -> None:
    """``HttpNfcLeaseAbort`` with ``reason``; a lease already ended is fine (blocking)."""
    vmodl = sdk().vmodl
    try:
        lease.HttpNfcLeaseAbort(vmodl.MethodFault(msg=reason))
    except vmodl.MethodFault:
        pass


def destroy_vm(service: Any, moid: str) -> bool:
    """Destroy the VM ``moid``; False when it is already gone (blocking)."""
    pyvmomi = sdk()
    vm = pyvmomi.vim.VirtualMachine(moid, service._stub)
    try:
        pyvmomi.task.WaitForTask(vm.Destroy_Task())
    except pyvmomi.vmodl.fault.ManagedObjectNotFound:
        return False
    return True
