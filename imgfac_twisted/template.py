"""TDL templates: hardened parsing, RELAX NG validation, and the fields we use.

A template arrives as untrusted text (a request body or form field).  It is
parsed by :func:`imgfac_twisted.xmlsafe.parse_xml` (size cap, no DTDs, no
entities), validated against ``schemas/tdl.rng``, and turned into a frozen
:class:`Template`.  Every refusal is an :class:`InvalidTemplate` whose
message says what is wrong and where, and never contains the root password.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass, field

from lxml import etree

from imgfac_twisted.errors import InvalidTemplate
from imgfac_twisted.redaction import scrub
from imgfac_twisted.tdl_schema import ARCHES, validate
from imgfac_twisted.xmlsafe import parse_xml

__all__ = [
    "ARCHES",
    "DEFAULT_DISK_SIZE_BYTES",
    "DEFAULT_DISK_SIZE_GIB",
    "MAX_TEMPLATE_BYTES",
    "Command",
    "Repository",
    "Template",
    "TemplateFile",
    "parse_template",
    "template_looks_like_xml",
]

#: Largest template accepted, in bytes (UTF-8 bytes for a ``str``).
MAX_TEMPLATE_BYTES = 1024 * 1024

#: Disk size when the template has no ``<disk>``.
DEFAULT_DISK_SIZE_GIB = 10
DEFAULT_DISK_SIZE_BYTES = DEFAULT_DISK_SIZE_GIB * 1024**3

#: Bytes per unit of ``<disk><size>`` (no unit: GiB, as in Oz).
_SIZE_UNITS = {"": 1024**3, "M": 1024**2, "G": 1024**3, "T": 1024**4}

#: How many validation problems one error message lists at most.
MAX_REPORTED_ERRORS = 3


@dataclass(frozen=True)
class Repository:
    """A ``<repository>``: packages are installed from it; ``persisted`` keeps it in the image."""

    name: str
    url: str
    signed: bool = False
    persisted: bool = True
    sslverify: bool = True


@dataclass(frozen=True)
class TemplateFile:
    """A ``<file>`` written into the image, its content decoded (raw or base64)."""

    path: str
    content: bytes = field(repr=False)


@dataclass(frozen=True)
class Command:
    """A ``<command>`` run in the installed system; ``script`` is decoded (raw or base64)."""

    name: str
    script: str = field(repr=False)
    position: int | None = None


@dataclass(frozen=True)
class Template:
    """A parsed and validated TDL template.

    Only the fields the factory needs are extracted; :meth:`tree` gives the
    whole document (files, commands, package details...).  ``xml`` and
    ``root_password`` are left out of the repr so a logged template never
    shows the password.
    """

    xml: str = field(repr=False)
    name: str
    description: str | None
    os_name: str
    os_version: str
    os_arch: str
    install_type: str
    install_location: str
    disk_size_gib: int = DEFAULT_DISK_SIZE_GIB
    root_password: str | None = field(default=None, repr=False)
    packages: tuple[str, ...] = ()
    repositories: tuple[tuple[str, str], ...] = ()
    #: The exact disk size; ``disk_size_gib`` is it rounded up to whole GiB.
    disk_size_bytes: int = DEFAULT_DISK_SIZE_BYTES
    repository_details: tuple[Repository, ...] = ()
    files: tuple[TemplateFile, ...] = ()
    #: ``<commands>``, in the order they run (by position, then as written).
    commands: tuple[Command, ...] = ()
    precommands: tuple[Command, ...] = ()
    #: Extra installer kernel parameters (``<kernelparam>``).
    kernel_params: str | None = None

    def tree(self) -> etree._Element:
        """A fresh root element of the template (re-parsed, safe to modify)."""
        return parse_xml(self.xml, max_bytes=MAX_TEMPLATE_BYTES, what="template", error=InvalidTemplate)


def template_looks_like_xml(text: str) -> bool:
    """Whether ``text`` is an inline XML template rather than a UUID or URL."""
    return text.lstrip().startswith("<")


def parse_template(text: str | bytes) -> Template:
    """Parse, validate and extract a TDL template; raise InvalidTemplate if bad."""
    secrets = _secrets_in_raw(text)
    try:
        root = parse_xml(text, max_bytes=MAX_TEMPLATE_BYTES, what="template", error=InvalidTemplate)
    except InvalidTemplate as exc:
        raise InvalidTemplate(scrub(exc.message, secrets)) from None

    secrets += _secrets_in_tree(root)
    name = root.find("name") if root.tag == "template" else None
    if name is not None and not (name.text or "").strip() and len(name) == 0:
        raise InvalidTemplate("template is invalid: <name> must not be empty")

    problems = validate(root)
    if problems:
        message = "template is invalid: " + "; ".join(problems[:MAX_REPORTED_ERRORS])
        if len(problems) > MAX_REPORTED_ERRORS:
            message += f" (and {len(problems) - MAX_REPORTED_ERRORS} more)"
        raise InvalidTemplate(scrub(message, secrets))

    return _extract(root, _as_text(text, root))


# ---------------------------------------------------------------------------
# Extraction (the document is valid by now)


def _extract(root: etree._Element, xml: str) -> Template:
    os_ = _child(root, "os")
    install = _child(os_, "install")
    install_type = _attribute(install, "type")
    rootpw = os_.find("rootpw")
    description = root.find("description")
    size = root.find("disk/size")
    size_bytes = DEFAULT_DISK_SIZE_BYTES if size is None else _disk_size_bytes(_text(size))
    kernelparam = root.find("kernelparam")
    return Template(
        xml=xml,
        name=_text(_child(root, "name")),
        description=None if description is None else _text(description),
        os_name=_text(_child(os_, "name")),
        os_version=_text(_child(os_, "version")),
        os_arch=_text(_child(os_, "arch")),
        install_type=install_type,
        install_location=_text(_child(install, install_type)),
        disk_size_gib=math.ceil(size_bytes / 1024**3),
        disk_size_bytes=size_bytes,
        root_password=None if rootpw is None else _text(rootpw),
        packages=tuple(_attribute(p, "name") for p in root.iterfind("packages/package")),
        repositories=tuple(
            (_attribute(r, "name"), _text(_child(r, "url"))) for r in root.iterfind("repositories/repository")
        ),
        repository_details=tuple(_repository(r) for r in root.iterfind("repositories/repository")),
        files=tuple(_file(f, i) for i, f in enumerate(root.iterfind("files/file"), 1)),
        commands=_commands(root, "commands"),
        precommands=_commands(root, "precommands"),
        kernel_params=None if kernelparam is None else (_text(kernelparam) or None),
    )


def _bool(element: etree._Element | None, default: bool) -> bool:
    return default if element is None else _text(element).lower() in ("true", "yes")


def _repository(element: etree._Element) -> Repository:
    return Repository(
        name=_attribute(element, "name"),
        url=_text(_child(element, "url")),
        signed=_bool(element.find("signed"), False),
        persisted=_bool(element.find("persisted"), True),
        sslverify=_bool(element.find("sslverify"), True),
    )


def _content(element: etree._Element, location: str) -> bytes:
    """The element's text, base64-decoded when ``type='base64'``."""
    text = element.text or ""
    if (element.get("type") or "raw").strip() != "base64":
        return text.encode("utf-8")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidTemplate(f"template is invalid: {location}: the content is not valid base64") from None


def _file(element: etree._Element, index: int) -> TemplateFile:
    path = _attribute(element, "name")
    return TemplateFile(path=path, content=_content(element, f"template/files/file[{index}] ({path!r})"))


def _commands(root: etree._Element, parent: str) -> tuple[Command, ...]:
    commands = []
    for index, element in enumerate(root.iterfind(f"{parent}/command"), 1):
        name = _attribute(element, "name")
        script = _content(element, f"template/{parent}/command[{index}] ({name!r})")
        try:
            text = script.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidTemplate(
                f"template is invalid: template/{parent}/command[{index}] ({name!r}): the script is not UTF-8 text"
            ) from None
        position = element.get("position")
        commands.append(Command(name=name, script=text, position=None if position is None else int(position)))
    # Oz runs positioned commands first, in order; the others follow as written.
    ordered = sorted(commands, key=lambda c: (c.position is None, c.position or 0))
    return tuple(ordered)


def _text(element: etree._Element) -> str:
    return (element.text or "").strip()


def _child(parent: etree._Element, path: str) -> etree._Element:
    """The element at ``path`` under ``parent``, which the schema requires (checked before extraction)."""
    found = parent.find(path)
    if found is None:
        raise InvalidTemplate(f"template is invalid: <{parent.tag}> has no <{path}>")
    return found


def _attribute(element: etree._Element, name: str) -> str:
    """An attribute the schema requires, stripped."""
    value = element.get(name)
    if value is None:
        raise InvalidTemplate(f"template is invalid: <{element.tag}> has no {name} attribute")
    return value.strip()


def _disk_size_bytes(size: str) -> int:
    """``"10"``/``"10G"`` -> 10 GiB, ``"64M"`` -> 64 MiB, ``"1T"`` -> 1 TiB, in bytes."""
    match = re.fullmatch(r"\s*([0-9]+)\s*([MGT]?)\s*", size)
    if match is None:  # the schema makes this unreachable; stay defensive
        raise InvalidTemplate(f"template is invalid: disk size {size!r} is not a size")
    size_bytes = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    if size_bytes <= 0:
        raise InvalidTemplate("template is invalid: disk size must be positive")
    return size_bytes


def _as_text(text: str | bytes, root: etree._Element) -> str:
    """The template as given, as a ``str`` (bytes decoded as the parser did)."""
    if isinstance(text, str):
        return text
    raw = bytes(text)
    encoding = root.getroottree().docinfo.encoding or "utf-8"
    try:
        decoded = raw.decode(encoding)
    except (LookupError, UnicodeDecodeError):
        raise InvalidTemplate(f"template is invalid: cannot decode it as {encoding}") from None
    return decoded.lstrip("\ufeff")


# ---------------------------------------------------------------------------
# Keeping the root password out of messages

_ROOTPW_RE = re.compile(r"<rootpw\b[^>]*>(.*?)(?:</rootpw\s*>|\Z)", re.DOTALL)


def _secrets_in_raw(text: str | bytes) -> list[str]:
    """Root passwords found by a plain scan (the document may not parse)."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        if len(text) > MAX_TEMPLATE_BYTES:
            return []
        text = bytes(text).decode("utf-8", errors="replace")
    elif len(text) > MAX_TEMPLATE_BYTES:
        return []
    found: list[str] = []
    for match in _ROOTPW_RE.finditer(text):
        found.extend(_secret_variants(match.group(1)))
    return found


def _secrets_in_tree(root: etree._Element) -> list[str]:
    found: list[str] = []
    for rootpw in root.iter("rootpw"):
        found.extend(_secret_variants("".join(str(piece) for piece in rootpw.itertext())))
    return found


def _secret_variants(secret: str) -> list[str]:
    """The secret, stripped, and its markup-separated pieces (a syntax error
    message may quote a fragment such as a bogus tag name)."""
    variants = [secret, secret.strip()]
    variants += [p for p in re.split(r"[\s<>&;/=\"'!?]+", secret) if len(p) >= 3]
    return [v for v in variants if v]
