"""Files the daemon serves from its own package: the status page and the OpenAPI document.

They are read once, at start-up, and kept in memory: they are small and
never change while the daemon runs.
"""

from __future__ import annotations

from importlib.resources import files

#: Content types of the files under ``web/static``, by suffix.
CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".json": b"application/json",
}


class Assets:
    """The static files, by name, with their content types."""

    def __init__(self) -> None:
        folder = files("imgfac_twisted.web") / "static"
        self._files: dict[str, tuple[bytes, bytes]] = {}
        for entry in folder.iterdir():
            suffix = "." + entry.name.rsplit(".", 1)[-1]
            if suffix in CONTENT_TYPES:
                self._files[entry.name] = (entry.read_bytes(), CONTENT_TYPES[suffix])
        self.openapi = (files("imgfac_twisted.web") / "openapi.json").read_bytes()

    def get(self, name: str) -> tuple[bytes, bytes] | None:
        """The body and content type of a static file, or None."""
        return self._files.get(name)


def wants_html(accept: bytes | None) -> bool:
    """True when an Accept header prefers HTML to JSON (as browsers' do)."""
    if not accept:
        return False
    best: dict[bytes, float] = {}
    for part in accept.lower().split(b","):
        media, *parameters = [piece.strip() for piece in part.split(b";")]
        quality = 1.0
        for parameter in parameters:
            if parameter.startswith(b"q="):
                try:
                    quality = float(parameter[2:])
                except ValueError:
                    quality = 0.0
        best[media] = max(best.get(media, 0.0), quality)
    html = best.get(b"text/html", 0.0)
    # On a tie JSON wins: it is what the spec promises every client.
    return html > 0 and html > best.get(b"application/json", 0.0)
