"""Removing the install domains a killed daemon left behind on libvirtd."""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..deferreds import observe
from ..xmlsafe import parse_xml
from .calls import thd_remove
from .connection import LibvirtConnection
from .spec import DOMAIN_PREFIX

_log = Logger()


def remove_leftover_domains(connection: LibvirtConnection, under: str | None = None) -> Deferred[list[str]]:
    """Destroy and undefine every domain named DOMAIN_PREFIX*; fire with their names.

    With ``under``, only the domains whose disk or console files lie in that
    directory (a daemon's state_dir): other daemons' installs on the same
    libvirtd are left alone.
    """
    return connection.run(_thd_remove_leftovers, under)


def _thd_remove_leftovers(conn: Any, under: str | None) -> list[str]:
    removed = []
    for domain in conn.listAllDomains(0):
        name = domain.name()
        if not name.startswith(DOMAIN_PREFIX):
            continue
        if under is not None and not _uses_files_under(domain.XMLDesc(0), under):
            continue
        thd_remove(domain)
        removed.append(name)
    return sorted(removed)


def _uses_files_under(xml: str, directory: str) -> bool:
    domain = parse_xml(xml, max_bytes=4 * 1024 * 1024, what="domain XML")
    found = domain.xpath("devices/disk/source/@file | devices/serial/source/@path")
    paths = [str(path) for path in found] if isinstance(found, list) else []
    top = os.path.abspath(directory)
    return any(os.path.commonpath([top, os.path.abspath(path)]) == top for path in paths)


class LeftoverDomainsSweep(Service):
    """At start-up, removes the install domains a killed daemon left behind under its state directory.

    A libvirtd that cannot be reached is not an error (a daemon that only
    builds mock images needs none): one warning is logged and the daemon
    goes on.
    """

    def __init__(self, connection: LibvirtConnection, state_dir: str) -> None:
        self.setName("leftover-domains")
        self._connection = connection
        self._state_dir = state_dir
        self._sweeping: Deferred[list[str]] | None = None

    def startService(self) -> None:
        super().startService()
        self._sweeping = remove_leftover_domains(self._connection, self._state_dir)
        self._sweeping.addCallbacks(self._swept, self._unreachable)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._sweeping is None or self._sweeping.called:
            return None
        return observe(self._sweeping)

    def _swept(self, names: list[str]) -> None:
        if names:
            _log.info("removed install domains a stopped daemon left behind: {names}", names=", ".join(names))

    def _unreachable(self, failure: Failure) -> None:
        _log.warn(
            "libvirt at {uri} cannot be reached ({error}): leftover install domains were not looked for, "
            "and OS installs will fail until it can",
            uri=self._connection.uri,
            error=failure.getErrorMessage(),
        )
