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
import copy
import functools
import importlib.resources
import math
import re
import threading
from dataclasses import dataclass, field

from lxml import etree

from imgfac_twisted.errors import InvalidTemplate
from imgfac_twisted.redaction import scrub
from imgfac_twisted.xmlsafe import parse_xml

__all__ = [
    "ARCHES",
    "Command",
    "DEFAULT_DISK_SIZE_BYTES",
    "DEFAULT_DISK_SIZE_GIB",
    "MAX_TEMPLATE_BYTES",
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
DEFAULT_DISK_SIZE_BYTES = DEFAULT_DISK_SIZE_GIB * 1024 ** 3

#: Bytes per unit of ``<disk><size>`` (no unit: GiB, as in Oz).
_SIZE_UNITS = {"": 1024 ** 3, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}

#: Architectures the schema accepts in ``<os><arch>``.
ARCHES = ("i386", "x86_64", "aarch64", "ppc64le", "s390x", "armv7l")

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
        return parse_xml(
            self.xml, max_bytes=MAX_TEMPLATE_BYTES, what="template", error=InvalidTemplate
        )


def template_looks_like_xml(text: str) -> bool:
    """Whether ``text`` is an inline XML template rather than a UUID or URL."""
    return text.lstrip().startswith("<")


def parse_template(text: str | bytes) -> Template:
    """Parse, validate and extract a TDL template; raise InvalidTemplate if bad."""
    secrets = _secrets_in_raw(text)
    try:
        root = parse_xml(
            text, max_bytes=MAX_TEMPLATE_BYTES, what="template", error=InvalidTemplate
        )
    except InvalidTemplate as exc:
        raise InvalidTemplate(scrub(exc.message, secrets)) from None

    secrets += _secrets_in_tree(root)
    name = root.find("name") if root.tag == "template" else None
    if name is not None and not (name.text or "").strip() and len(name) == 0:
        raise InvalidTemplate("template is invalid: <name> must not be empty")

    problems = _validate(root)
    if problems:
        message = "template is invalid: " + "; ".join(problems[:MAX_REPORTED_ERRORS])
        if len(problems) > MAX_REPORTED_ERRORS:
            message += f" (and {len(problems) - MAX_REPORTED_ERRORS} more)"
        raise InvalidTemplate(scrub(message, secrets))

    return _extract(root, _as_text(text, root))


# ---------------------------------------------------------------------------
# Extraction (the document is valid by now)


def _extract(root: etree._Element, xml: str) -> Template:
    os_ = root.find("os")
    install = os_.find("install")
    install_type = install.get("type").strip()
    rootpw = os_.find("rootpw")
    description = root.find("description")
    size = root.find("disk/size")
    size_bytes = DEFAULT_DISK_SIZE_BYTES if size is None else _disk_size_bytes(_text(size))
    kernelparam = root.find("kernelparam")
    return Template(
        xml=xml,
        name=_text(root.find("name")),
        description=None if description is None else _text(description),
        os_name=_text(os_.find("name")),
        os_version=_text(os_.find("version")),
        os_arch=_text(os_.find("arch")),
        install_type=install_type,
        install_location=_text(install.find(install_type)),
        disk_size_gib=math.ceil(size_bytes / 1024 ** 3),
        disk_size_bytes=size_bytes,
        root_password=None if rootpw is None else _text(rootpw),
        packages=tuple(p.get("name").strip() for p in root.iterfind("packages/package")),
        repositories=tuple(
            (r.get("name").strip(), _text(r.find("url")))
            for r in root.iterfind("repositories/repository")
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
        name=element.get("name").strip(),
        url=_text(element.find("url")),
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
    path = element.get("name").strip()
    return TemplateFile(path=path, content=_content(element, f"template/files/file[{index}] ({path!r})"))


def _commands(root: etree._Element, parent: str) -> tuple[Command, ...]:
    commands = []
    for index, element in enumerate(root.iterfind(f"{parent}/command"), 1):
        name = element.get("name").strip()
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
        raise InvalidTemplate(
            f"template is invalid: cannot decode it as {encoding}"
        ) from None
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
        found.extend(_secret_variants("".join(rootpw.itertext())))
    return found


def _secret_variants(secret: str) -> list[str]:
    """The secret, stripped, and its markup-separated pieces (a syntax error
    message may quote a fragment such as a bogus tag name)."""
    variants = [secret, secret.strip()]
    variants += [p for p in re.split(r"[\s<>&;/=\"'!?]+", secret) if len(p) >= 3]
    return [v for v in variants if v]


# ---------------------------------------------------------------------------
# RELAX NG validation and readable error messages

_RNG_NS = "http://relaxng.org/ns/structure/1.0"

# A RelaxNG object keeps its error log on itself: validation and reading the
# log must not interleave between threads.
_validation_lock = threading.Lock()


@functools.cache
def _schema_document() -> etree._Element:
    data = (importlib.resources.files("imgfac_twisted") / "schemas" / "tdl.rng").read_bytes()
    parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True)
    return etree.fromstring(data, parser)


@functools.cache
def _relaxng() -> etree.RelaxNG:
    """The TDL schema, compiled on first use."""
    return etree.RelaxNG(_schema_document())


@functools.cache
def _define_names() -> frozenset[str]:
    return frozenset(d.get("name") for d in _schema_document().iterfind(f"{{{_RNG_NS}}}define"))


@functools.cache
def _sub_relaxng(define: str) -> etree.RelaxNG:
    """The schema with ``define`` as its start: validates one element alone."""
    grammar = copy.deepcopy(_schema_document())
    start = grammar.find(f"{{{_RNG_NS}}}start")
    for child in list(start):
        start.remove(child)
    etree.SubElement(start, f"{{{_RNG_NS}}}ref", name=define)
    return etree.RelaxNG(grammar)


def _run(schema: etree.RelaxNG, root: etree._Element) -> list:
    with _validation_lock:
        if schema.validate(root):
            return []
        return list(schema.error_log)


def _validate(root: etree._Element) -> list[str]:
    """Human-readable problems of the document; empty when it is valid."""
    entries = _run(_relaxng(), root)
    if not entries:
        return []
    problems = _explain(root, entries, prefix="")
    return problems or ["the template does not match the TDL schema"]


# Attributes each element may carry: name -> (required, description of a
# valid value).
_ATTRIBUTES = {
    "template": {"version": (False, "a non-empty version")},
    "install": {"type": (True, "'url' or 'iso'")},
    "repository": {"name": (True, "a non-empty name")},
    "package": {"name": (True, "a non-empty name")},
    "file": {"name": (True, "a non-empty path"), "type": (False, "'raw' or 'base64'")},
    "command": {
        "name": (True, "a non-empty name"),
        "type": (False, "'raw' or 'base64'"),
        "position": (False, "a positive integer"),
    },
}

_BOOL = "true, false, yes or no"
_VALUE_HINTS = {
    "arch": "one of " + ", ".join(ARCHES),
    "size": "a positive size in GiB, or with a unit: e.g. 10, 10G, 10240M, 1T",
    "md5sum": "32 hexadecimal digits",
    "sha1sum": "40 hexadecimal digits",
    "sha256sum": "64 hexadecimal digits",
    "signed": _BOOL,
    "persisted": _BOOL,
    "sslverify": _BOOL,
}

# Elements whose values are never quoted in a message.
_SECRET_ELEMENTS = frozenset({"rootpw", "key", "clientkey"})

_MESSAGE_PATTERNS = {
    "NOELEM": re.compile(r"Expecting an element (?P<child>\S+), got nothing"),
    "ELEMNAME": re.compile(r"Expecting element (?P<want>\S+), got (?P<got>\S+)"),
    "EXTRACONTENT": re.compile(r"Element (?P<el>\S+) has extra content: (?P<child>\S+)"),
    "INVALIDATTR": re.compile(r"Invalid attribute (?P<attr>\S+) for element (?P<el>\S+)"),
    "INTEREXTRA": re.compile(r"Extra element (?P<child>\S+) in interleave"),
    "ELEMWRONG": re.compile(r"Did not expect element (?P<child>\S+) there"),
    "CONTENTVALID": re.compile(r"Element (?P<el>\S+) failed to validate content"),
    "ATTRVALID": re.compile(r"Element (?P<el>\S+) failed to validate attributes"),
}
_NO_MATCH = re.compile(r"(?!)")


def _kind(entry) -> str:
    return entry.type_name.removeprefix("RELAXNG_ERR_")


def _node(root: etree._Element, path: str | None) -> etree._Element | None:
    if not path:
        return None
    try:
        found = root.getroottree().xpath(path)
    except etree.XPathError:
        return None
    return found[0] if found and isinstance(found[0], etree._Element) else None


def _where(node: etree._Element | None, entry, prefix: str, path: str | None) -> tuple[str, str]:
    """``("line N: ", "template/os")`` for an error at ``path``."""
    line = node.sourceline if node is not None else entry.line
    location = (prefix + (path or "")).strip("/") or "template"
    return (f"line {line}: " if line else ""), location


def _parent(location: str) -> str:
    return location.rsplit("/", 1)[0] if "/" in location else location


def _define_for(location: str) -> str:
    return ".".join(re.sub(r"\[\d+\]", "", step) for step in location.split("/"))


def _explain(root: etree._Element, entries: list, prefix: str) -> list[str]:
    """Turn libxml2's RELAX NG error log into readable problems.

    ``prefix`` is the path of the parent of ``root`` when ``root`` is a
    copy of one element validated alone (see :func:`_sub_relaxng`).
    """
    problems: list[str] = []
    explained: set[str] = set()  # locations already given a precise problem
    interleave_extra: str | None = None

    def add(problem: str, location: str) -> None:
        explained.add(location)
        if problem not in problems:
            problems.append(problem)

    for entry in entries:
        kind = _kind(entry)
        match = _MESSAGE_PATTERNS.get(kind, _NO_MATCH).match(entry.message)
        node = _node(root, entry.path)
        line, location = _where(node, entry, prefix, entry.path)

        if kind == "INTEREXTRA" and match:
            # libxml2 names the offending element but not where it is: the
            # next entry with a path points at it or at its parent.
            interleave_extra = match["child"]
            continue
        if kind == "INTERSEQ":
            continue
        if interleave_extra and entry.path:
            child, interleave_extra = interleave_extra, None
            if node is not None:
                offenders = [node] if node.tag == child else node.findall(child)
                if len(offenders) > 1:
                    add(f"{line}{location}: element <{child}> may appear only once", location)
                    continue
                if offenders:
                    for problem in _explain_interleave_child(root, offenders[0], prefix):
                        add(problem, location)
                    continue

        if kind == "NOELEM" and match:
            add(f"{line}{location}: missing required element <{match['child']}>", location)
        elif kind == "ELEMNAME" and match:
            if "/" not in location:
                add(f"{line}the root element must be <{match['want']}>, not <{match['got']}>", location)
            else:
                add(f"{line}{_parent(location)}: expected <{match['want']}>, found <{match['got']}>", location)
        elif kind == "EXTRACONTENT" and match:
            owner = location if node is not None and node.tag == match["el"] else _parent(location)
            if match["child"] == "text":
                add(f"{line}{owner}: unexpected text", location)
            else:
                add(f"{line}{owner}: unexpected element <{match['child']}>", location)
        elif kind == "ELEMWRONG" and match:
            add(f"{line}{_parent(location)}: unexpected element <{match['child']}>", location)
        elif kind == "INVALIDATTR" and match:
            add(_attribute_problem(node, match["attr"], line, location), location)
        elif kind == "ATTRVALID" and match:
            if node is not None and node.tag != match["el"]:
                # libxml2 may point at the first child of the culprit.
                node, location = node.getparent(), _parent(location)
            for problem in _missing_attributes(node, line, location):
                add(problem, location)
        elif kind in ("DATATYPE", "VALUE", "DATAELEM", "LIST", "NOTEXT"):
            add(_value_problem(node, line, location), location)
        elif kind in ("ELEMEXTRANS", "ELEMWRONGNS", "ELEMNONS"):
            add(f"{line}TDL elements must not be in an XML namespace", location)
        elif kind == "CONTENTVALID" and match:
            owner_is_node = node is not None and node.tag == match["el"]
            if owner_is_node and node.tag == "install" and location not in explained:
                add(_install_problem(node, line, location), location)
            elif owner_is_node:
                # Summary of errors reported before; only useful on its own.
                if not problems:
                    add(f"{line}{location}: invalid content", location)
            elif location not in explained and _parent(location) not in explained:
                add(_content_problem(node, line, location), location)
        elif not problems:
            add(f"{line}{location}: {entry.message}", location)
    return problems


def _explain_interleave_child(root: etree._Element, node: etree._Element, prefix: str) -> list[str]:
    """Why an element libxml2 only calls "extra in interleave" is wrong."""
    line = f"line {node.sourceline}: " if node.sourceline else ""
    location = (prefix + root.getroottree().getpath(node)).strip("/")
    parent = _parent(location)
    siblings = node.getparent()
    if siblings is not None and len(siblings.findall(node.tag)) > 1:
        return [f"{line}{parent}: element <{node.tag}> may appear only once"]
    define = _define_for(location)
    if define in _define_names():
        alone = copy.deepcopy(node)
        alone.tail = None
        entries = _run(_sub_relaxng(define), alone)
        if entries:
            problems = _explain(alone, entries, prefix=parent)
            if problems:
                return problems
    if node.tag == "install":
        return [_install_problem(node, line, location)]
    return [f"{line}{parent}: element <{node.tag}> is not allowed here"]


def _content_problem(node: etree._Element | None, line: str, location: str) -> str:
    """An element whose content failed as a whole; ``location`` is its child."""
    owner = _parent(location)
    owner_node = node.getparent() if node is not None else None
    if owner_node is not None and owner_node.tag == "install":
        return _install_problem(owner_node, line, owner)
    child = f" <{node.tag}>" if node is not None else ""
    return f"{line}{owner}: invalid or unexpected content{child}"


def _install_problem(install: etree._Element, line: str, location: str) -> str:
    """What is wrong with an ``<install>`` (its type and children go together)."""
    install_type = (install.get("type") or "").strip()
    if "type" not in install.attrib:
        return f"{line}{location}: attribute 'type' is required ('url' or 'iso')"
    if install_type not in ("url", "iso"):
        return f"{line}{location}: attribute 'type' must be 'url' or 'iso', not {_quote(install_type)}"
    if install_type == "url":
        return f"{line}{location}: an install of type 'url' needs exactly one <url> element"
    return (
        f"{line}{location}: an install of type 'iso' needs one <iso> element and at most "
        "one of <md5sum>, <sha1sum>, <sha256sum>"
    )


def _attribute_problem(node, attribute: str, line: str, location: str) -> str:
    known = _ATTRIBUTES.get(node.tag if node is not None else "", {})
    if attribute in known and node is not None:
        return (
            f"{line}{location}: attribute '{attribute}' must be {known[attribute][1]}, "
            f"not {_quote(node.get(attribute, ''))}"
        )
    return f"{line}{location}: unexpected attribute '{attribute}'"


def _missing_attributes(node, line: str, location: str) -> list[str]:
    known = _ATTRIBUTES.get(node.tag if node is not None else "", {})
    missing = [
        f"{line}{location}: missing required attribute '{name}'"
        for name, (required, _) in known.items()
        if required and node.get(name) is None
    ]
    return missing or [f"{line}{location}: invalid attributes"]


def _value_problem(node, line: str, location: str) -> str:
    if node is None:
        return f"{line}{location}: invalid value"
    value = "".join(node.itertext()).strip()
    if not value:
        return f"{line}{location} must not be empty"
    if node.tag in _SECRET_ELEMENTS:
        return f"{line}{location}: invalid value"
    hint = _VALUE_HINTS.get(node.tag)
    if hint:
        return f"{line}{location}: {_quote(value)} is not valid, expected {hint}"
    return f"{line}{location}: {_quote(value)} is not a valid value"


def _quote(value: str, limit: int = 40) -> str:
    if len(value) > limit:
        value = value[:limit] + "..."
    return repr(value)
