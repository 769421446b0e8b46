"""Where a request's template comes from: inline TDL, a known image's UUID, or an http(s) URL.

Every template is parsed and validated through the CPU door: RELAX NG on a
1 MiB template takes about a second of CPU, too long for the reactor.
"""

from __future__ import annotations

import re

from ..doors import IDoor
from ..errors import InvalidRequest, UnknownObject
from ..store import IStore
from ..template import Template, parse_template, template_looks_like_xml
from .fetch import TemplateFetcher

UUID_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def parse_targets(text: str, known: list[str]) -> list[str]:
    """The distinct target names of a comma-separated list, each one known."""
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise InvalidRequest("parameter 'targets' names no target (give a comma-separated list)")
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InvalidRequest(
            f"unknown target {', '.join(map(repr, unknown))}: known targets are {', '.join(sorted(known))}"
        )
    return names


class TemplateSource:
    """Turns what a request gave as its template into a parsed, valid Template."""

    def __init__(self, store: IStore, fetcher: TemplateFetcher, cpu_door: IDoor) -> None:
        self._store = store
        self._fetcher = fetcher
        self._cpu_door = cpu_door

    async def parse(self, text: str | bytes) -> Template:
        """``text`` parsed and validated through the CPU door; InvalidTemplate if it is not a valid TDL."""
        template: Template = await self._cpu_door.run(parse_template, text)
        return template

    async def resolve(self, text: str) -> Template:
        """The template ``text`` stands for: inline TDL XML, a known image's UUID, or an http(s) URL."""
        if template_looks_like_xml(text):
            return await self.parse(text)
        if UUID_PATTERN.match(text):
            try:
                image = await self._store.get_image(text)
            except UnknownObject:
                raise InvalidRequest(f"parameter 'template' names no known image ({text})") from None
            return await self.parse((await self._store.get_template(image.template_id)).xml)
        if text.startswith(("http://", "https://")):
            return await self.parse(await self._fetcher.fetch(text))
        raise InvalidRequest("parameter 'template' must be TDL XML, the UUID of a known image, or an http(s) URL")
