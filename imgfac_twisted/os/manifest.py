"""The package manifest of an installed system, as its installer prints it on the serial console.

The last step of every generated answer file (the preseed's
``late_command``, the kickstart's last ``%post``) asks the new system's
package database for its packages and prints them on ``/dev/ttyS0``::

    IMGFAC-MANIFEST-BEGIN
    IMGFAC-PKG openssh-server 1:9.2p1-2+deb12u3 amd64
    ...
    IMGFAC-MANIFEST-END

Reading it from the console, rather than from the image, needs neither the
guest's network nor a way to read the image's file systems (LVM, XFS,
Btrfs) on the host.  A manifest counts only once its end marker came.
"""

from __future__ import annotations

from collections.abc import Callable

from . import Package

BEGIN = "IMGFAC-MANIFEST-BEGIN"
END = "IMGFAC-MANIFEST-END"
PACKAGE = "IMGFAC-PKG "


class ManifestReader:
    """Takes the manifest out of the console lines as they come, and passes every other line on to ``log``."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self._reading: list[Package] | None = None
        #: The packages, once a whole manifest (begin to end) was read; else None.
        self.packages: list[Package] | None = None

    def line(self, text: str) -> None:
        """One clean console line."""
        # Anchored by its marker, not the line start: a kernel message may
        # have been printed on the same line just before.
        if text.endswith(BEGIN):
            self._reading = []
        elif self._reading is not None and PACKAGE in text:
            self._package(text[text.index(PACKAGE) + len(PACKAGE) :])
        elif self._reading is not None and text.endswith(END):
            self.packages, self._reading = self._reading, None
            self._log(f"package manifest read from the console: {len(self.packages)} packages")
        else:
            self._log(text)

    def _package(self, fields: str) -> None:
        assert self._reading is not None
        parts = fields.split()
        if len(parts) == 3:
            self._reading.append(Package(*parts))
        else:
            self._log(f"(a package line of the manifest that does not read as name, version, arch: {fields!r})")
