"""TDL validation against ``schemas/tdl.rng``, with error messages a person can act on.

libxml2 reports little more than "extra element in interleave" for an element
inside an ``<interleave>``; the schema names every such element's define after
its path (``template.os.arch``), so the offending element is validated alone
against its define to find the real problem (see ``_explain``).
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import re
import threading
from typing import Any, TypeAlias

from lxml import etree

#: Architectures the schema accepts in ``<os><arch>``.
ARCHES = ("i386", "x86_64", "aarch64", "ppc64le", "s390x", "armv7l")

_RNG_NS = "http://relaxng.org/ns/structure/1.0"

# A RelaxNG object keeps its error log on itself: validation and reading the
# log must not interleave between threads.
_validation_lock = threading.Lock()


@functools.cache
def schema_document() -> etree._Element:
    """The TDL schema's document (``schemas/tdl.rng``), comments removed."""
    data = (importlib.resources.files("imgfac_twisted") / "schemas" / "tdl.rng").read_bytes()
    parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True)
    return etree.fromstring(data, parser)


@functools.cache
def _relaxng() -> etree.RelaxNG:
    """The TDL schema, compiled on first use."""
    return etree.RelaxNG(schema_document())


@functools.cache
def _define_names() -> frozenset[str]:
    names = (d.get("name") for d in schema_document().iterfind(f"{{{_RNG_NS}}}define"))
    return frozenset(name for name in names if name is not None)


@functools.cache
def _sub_relaxng(define: str) -> etree.RelaxNG:
    """The schema with ``define`` as its start: validates one element alone."""
    grammar = copy.deepcopy(schema_document())
    start = grammar.find(f"{{{_RNG_NS}}}start")
    if start is None:
        raise ValueError("the TDL schema has no <start>")
    for child in list(start):
        start.remove(child)
    etree.SubElement(start, f"{{{_RNG_NS}}}ref", name=define)
    return etree.RelaxNG(grammar)


#: An entry of libxml2's error log (lxml-stubs has no type for it).
LogEntry: TypeAlias = Any


def _run(schema: etree.RelaxNG, root: etree._Element) -> list[LogEntry]:
    with _validation_lock:
        if schema.validate(root):
            return []
        return list(schema.error_log)


def validate(root: etree._Element) -> list[str]:
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


def _kind(entry: LogEntry) -> str:
    return str(entry.type_name).removeprefix("RELAXNG_ERR_")


def _node(root: etree._Element, path: str | None) -> etree._Element | None:
    if not path:
        return None
    try:
        found = root.getroottree().xpath(path)
    except etree.XPathError:
        return None
    return found[0] if isinstance(found, list) and found and isinstance(found[0], etree._Element) else None


def _where(node: etree._Element | None, entry: LogEntry, prefix: str, path: str | None) -> tuple[str, str]:
    """``("line N: ", "template/os")`` for an error at ``path``."""
    line = node.sourceline if node is not None else entry.line
    location = (prefix + (path or "")).strip("/") or "template"
    return (f"line {line}: " if line else ""), location


def _parent(location: str) -> str:
    return location.rsplit("/", 1)[0] if "/" in location else location


def _define_for(location: str) -> str:
    return ".".join(re.sub(r"\[\d+\]", "", step) for step in location.split("/"))


def _explain(root: etree._Element, entries: list[LogEntry], prefix: str) -> list[str]:
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
            culprit = node if node is not None and node.tag == match["el"] else None
            if culprit is not None and culprit.tag == "install" and location not in explained:
                add(_install_problem(culprit, line, location), location)
            elif culprit is not None:
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


def _attribute_problem(node: etree._Element | None, attribute: str, line: str, location: str) -> str:
    known = _ATTRIBUTES.get(node.tag if node is not None else "", {})
    if attribute in known and node is not None:
        return (
            f"{line}{location}: attribute '{attribute}' must be {known[attribute][1]}, "
            f"not {_quote(node.get(attribute, ''))}"
        )
    return f"{line}{location}: unexpected attribute '{attribute}'"


def _missing_attributes(node: etree._Element | None, line: str, location: str) -> list[str]:
    known = _ATTRIBUTES.get(node.tag if node is not None else "", {})
    missing = [
        f"{line}{location}: missing required attribute '{name}'"
        for name, (required, _) in known.items()
        if required and (node is None or node.get(name) is None)
    ]
    return missing or [f"{line}{location}: invalid attributes"]


def _value_problem(node: etree._Element | None, line: str, location: str) -> str:
    if node is None:
        return f"{line}{location}: invalid value"
    value = "".join(str(piece) for piece in node.itertext()).strip()
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
