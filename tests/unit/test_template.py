"""Tests of TDL template parsing and validation (imgfac_twisted.template)."""

import pytest
from lxml import etree

from imgfac_twisted import tdl_schema
from imgfac_twisted import template as template_module
from imgfac_twisted.errors import InvalidRequest, InvalidTemplate
from imgfac_twisted.template import (
    MAX_TEMPLATE_BYTES,
    Template,
    parse_template,
    template_looks_like_xml,
)

SPEC_EXAMPLE = (
    "<template><name>f14jeos</name><os><name>Fedora</name><version>14</version>"
    "<arch>x86_64</arch><install type='url'>"
    "<url>http://download.fedoraproject.org/pub/fedora/linux/releases/14/Fedora/x86_64/os/</url>"
    "</install><rootpw>p@55w0rd!</rootpw></os><description>Fedora 14</description></template>"
)

SHA256 = "0123456789abcdef" * 4

FULL = f"""<?xml version="1.0" encoding="UTF-8"?>
<template version="1.0">
  <description>A full template</description>
  <os>
    <rootpw>Zq9-secret-pw</rootpw>
    <install type="iso">
      <sha256sum>{SHA256}</sha256sum>
      <iso>http://mirror.example.com/isos/Fedora-39-aarch64.iso</iso>
    </install>
    <arch>aarch64</arch>
    <version>39</version>
    <name>Fedora</name>
    <key>ABCD-EFGH</key>
  </os>
  <name>  full-template  </name>
  <disk><size>20480M</size></disk>
  <repositories>
    <repository name="updates">
      <signed>yes</signed>
      <url>http://mirror.example.com/updates/</url>
      <persisted>false</persisted>
      <sslverify>True</sslverify>
    </repository>
    <repository name="extras">
      <url>http://mirror.example.com/extras/</url>
    </repository>
  </repositories>
  <packages>
    <package name="httpd"/>
    <package name="custom">
      <repository>extras</repository>
      <args>--nogpgcheck</args>
      <file>custom.rpm</file>
    </package>
  </packages>
  <files>
    <file name="/etc/motd" type="raw">Welcome</file>
    <file name="/etc/blob" type="base64">aGVsbG8=</file>
    <file name="/etc/plain">no type</file>
  </files>
  <commands>
    <command name="one" position="1">echo one</command>
    <command name="two" type="base64" position="2">ZWNobyB0d28=</command>
  </commands>
  <precommands>
    <command name="pre">echo pre</command>
  </precommands>
  <kernelparam>console=ttyS0</kernelparam>
</template>
"""


def invalid(text):
    """The InvalidTemplate message parse_template raises for ``text``."""
    with pytest.raises(InvalidTemplate) as info:
        parse_template(text)
    assert str(info.value) == info.value.message
    return info.value.message


def test_spec_example_parses():
    """The example template of the spec yields its name, OS, url install and default disk."""
    template = parse_template(SPEC_EXAMPLE)
    assert isinstance(template, Template)
    assert template.name == "f14jeos"
    assert template.description == "Fedora 14"
    assert (template.os_name, template.os_version, template.os_arch) == ("Fedora", "14", "x86_64")
    assert template.install_type == "url"
    assert template.install_location == (
        "http://download.fedoraproject.org/pub/fedora/linux/releases/14/Fedora/x86_64/os/"
    )
    assert template.disk_size_gib == 10
    assert template.root_password == "p@55w0rd!"
    assert template.packages == ()
    assert template.repositories == ()
    assert template.xml == SPEC_EXAMPLE


def test_full_template_parses_with_all_fields():
    """A template using every element (any order, iso install, disk, repos, packages...) parses."""
    template = parse_template(FULL)
    assert template.name == "full-template"
    assert template.description == "A full template"
    assert (template.os_name, template.os_version, template.os_arch) == ("Fedora", "39", "aarch64")
    assert template.install_type == "iso"
    assert template.install_location == "http://mirror.example.com/isos/Fedora-39-aarch64.iso"
    assert template.disk_size_gib == 20
    assert template.root_password == "Zq9-secret-pw"
    assert template.packages == ("httpd", "custom")
    assert template.repositories == (
        ("updates", "http://mirror.example.com/updates/"),
        ("extras", "http://mirror.example.com/extras/"),
    )
    assert template.xml == FULL


def test_tree_gives_the_rest_of_the_document():
    """tree() re-parses the template so files and commands are reachable."""
    tree = parse_template(FULL).tree()
    assert tree.tag == "template"
    assert [f.get("name") for f in tree.iterfind("files/file")] == [
        "/etc/motd",
        "/etc/blob",
        "/etc/plain",
    ]
    assert tree.findtext("commands/command[@name='two']") == "ZWNobyB0d28="
    assert tree.findtext("kernelparam") == "console=ttyS0"


def test_bytes_template_parses_and_xml_is_str():
    """A template given as bytes parses and its xml field is the decoded text."""
    template = parse_template(FULL.encode("utf-8"))
    assert template.name == "full-template"
    assert template.xml == FULL


@pytest.mark.parametrize(
    "size, gib",
    [("10", 10), ("10G", 10), ("10240M", 10), ("10241M", 11), ("1M", 1), ("2T", 2048), (" 15 ", 15)],
)
def test_disk_size_units(size, gib):
    """Disk sizes in GiB, M, G or T are converted to GiB, rounding up."""
    text = SPEC_EXAMPLE.replace("</template>", f"<disk><size>{size}</size></disk></template>")
    assert parse_template(text).disk_size_gib == gib


@pytest.mark.parametrize("size", ["0", "0G", "10X", "-5", "ten", ""])
def test_bad_disk_size_refused(size):
    """A zero, negative, unit-less garbage or empty disk size is refused, naming the size."""
    text = SPEC_EXAMPLE.replace("</template>", f"<disk><size>{size}</size></disk></template>")
    message = invalid(text)
    assert "size" in message


def test_str_with_xml_declaration_parses():
    """A str starting with an XML declaration that names an encoding parses."""
    template = parse_template('<?xml version="1.0" encoding="UTF-8"?>\n' + SPEC_EXAMPLE)
    assert template.name == "f14jeos"


def test_invalid_template_is_an_invalid_request():
    """InvalidTemplate is an InvalidRequest, so the web layer answers 400."""
    with pytest.raises(InvalidRequest):
        parse_template("<nope/>")


def test_missing_name_refused():
    """A template without <name> is refused, naming the missing element."""
    message = invalid(SPEC_EXAMPLE.replace("<name>f14jeos</name>", ""))
    assert message.startswith("template is invalid: ")
    assert "missing required element <name>" in message
    assert "line 1" in message


def test_empty_name_refused():
    """A blank <name> is refused with a dedicated message."""
    message = invalid(SPEC_EXAMPLE.replace("<name>f14jeos</name>", "<name>  \n </name>"))
    assert message == "template is invalid: <name> must not be empty"


def test_empty_os_name_refused():
    """A blank <os><name> is refused, naming where."""
    message = invalid(SPEC_EXAMPLE.replace("<name>Fedora</name>", "<name></name>"))
    assert "template/os/name must not be empty" in message


def test_missing_os_refused():
    """A template without <os> is refused, naming the missing element."""
    message = invalid("<template><name>x</name></template>")
    assert "missing required element <os>" in message


def test_missing_arch_refused():
    """An <os> without <arch> is refused, naming <os> and <arch>."""
    message = invalid(SPEC_EXAMPLE.replace("<arch>x86_64</arch>", ""))
    assert "template/os: missing required element <arch>" in message


def test_bad_arch_refused_with_line_number():
    """An unknown architecture is refused, quoting it and listing the valid ones, with its line."""
    text = FULL.replace("<arch>aarch64</arch>", "<arch>sparc</arch>")
    message = invalid(text)
    assert "line 10: template/os/arch" in message
    assert "'sparc'" in message
    assert "x86_64" in message


def test_bad_install_type_refused():
    """An install type other than url or iso is refused, naming the attribute."""
    message = invalid(SPEC_EXAMPLE.replace("type='url'", "type='ftp'"))
    assert "template/os/install" in message
    assert "attribute 'type' must be 'url' or 'iso'" in message
    assert "'ftp'" in message


def test_missing_install_type_refused():
    """An <install> without a type attribute is refused."""
    message = invalid(SPEC_EXAMPLE.replace(" type='url'", ""))
    assert "attribute 'type' is required" in message


def test_install_type_mismatch_refused():
    """A url install carrying <iso> instead of <url> is refused."""
    text = SPEC_EXAMPLE.replace("<url>", "<iso>").replace("</url>", "</iso>")
    message = invalid(text)
    assert "type 'url' needs exactly one <url>" in message


def test_bad_checksum_refused():
    """A malformed checksum of an ISO install is refused, naming the element."""
    text = FULL.replace(SHA256, "nothex")
    message = invalid(text)
    assert "template/os/install/sha256sum" in message
    assert "64 hexadecimal digits" in message


def test_duplicate_element_refused():
    """Two <name> elements are refused as a repetition."""
    message = invalid(SPEC_EXAMPLE.replace("<name>f14jeos</name>", "<name>a</name><name>b</name>"))
    assert "element <name> may appear only once" in message


def test_unknown_element_refused():
    """An element the schema does not know is refused, naming it."""
    message = invalid(SPEC_EXAMPLE.replace("</os>", "<bogus/></os>"))
    assert "template/os: unexpected element <bogus>" in message


def test_unknown_attribute_refused():
    """An attribute the schema does not know is refused, naming it."""
    message = invalid(SPEC_EXAMPLE.replace("<template>", "<template colour='blue'>"))
    assert "unexpected attribute 'colour'" in message


def test_repository_without_name_refused():
    """A <repository> without its name attribute is refused."""
    text = SPEC_EXAMPLE.replace(
        "</template>", "<repositories><repository><url>http://r/</url></repository></repositories></template>"
    )
    message = invalid(text)
    assert "template/repositories/repository: missing required attribute 'name'" in message


def test_bad_boolean_refused():
    """A repository flag that is not a boolean is refused, quoting it."""
    message = invalid(FULL.replace("<signed>yes</signed>", "<signed>maybe</signed>"))
    assert "line 19: template/repositories/repository[1]/signed" in message
    assert "'maybe'" in message


def test_bad_file_type_refused():
    """A <file> type other than raw or base64 is refused."""
    message = invalid(FULL.replace('type="raw"', 'type="hex"'))
    assert "line 37: template/files/file[1]: attribute 'type' must be 'raw' or 'base64'" in message


def test_bad_command_position_refused():
    """A command position that is not a positive integer is refused."""
    message = invalid(FULL.replace('position="1"', 'position="first"'))
    assert "attribute 'position' must be a positive integer" in message


def test_wrong_root_element_refused():
    """A document whose root is not <template> is refused, naming both elements."""
    message = invalid("<image><name>x</name></image>")
    assert "the root element must be <template>, not <image>" in message


def test_namespaced_template_refused():
    """TDL elements in an XML namespace are refused."""
    message = invalid("<template xmlns='urn:example'><name>x</name></template>")
    assert "namespace" in message


def test_not_xml_refused():
    """Text that is not XML at all is refused as not well-formed."""
    message = invalid("this is not a template")
    assert message.startswith("template is not well-formed XML: ")


def test_truncated_xml_refused():
    """A truncated document is refused as not well-formed, with a position."""
    message = invalid(SPEC_EXAMPLE[: len(SPEC_EXAMPLE) // 2])
    assert "not well-formed XML" in message
    assert "line 1" in message


def test_empty_string_refused():
    """An empty template is refused."""
    assert invalid("") == "template is empty"
    assert invalid(b"  \n") == "template is empty"


def test_xxe_refused_without_leaking_file():
    """XXE: a SYSTEM entity for /etc/passwd is refused and no file content leaks."""
    text = '<!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + SPEC_EXAMPLE.replace("f14jeos", "&x;")
    message = invalid(text)
    assert "DOCTYPE" in message
    assert "root:" not in message


def test_billion_laughs_refused():
    """Nested entity declarations (billion laughs) are refused."""
    entities = '<!ENTITY a0 "ha">' + "".join(f'<!ENTITY a{i} "{("&a" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
    text = f"<!DOCTYPE template [{entities}]>" + SPEC_EXAMPLE.replace("f14jeos", "&a9;")
    message = invalid(text)
    assert "DOCTYPE" in message


def test_external_dtd_refused():
    """A DOCTYPE naming an external DTD over the network is refused."""
    message = invalid('<!DOCTYPE template SYSTEM "http://127.0.0.1:9/x.dtd">' + SPEC_EXAMPLE)
    assert "DOCTYPE" in message


def test_oversize_template_refused():
    """A template of MAX_TEMPLATE_BYTES + 1 bytes is refused, naming the limit."""
    padding = " " * (MAX_TEMPLATE_BYTES + 1 - len(SPEC_EXAMPLE))
    text = SPEC_EXAMPLE + padding
    assert len(text.encode("utf-8")) == MAX_TEMPLATE_BYTES + 1
    message = invalid(text)
    assert str(MAX_TEMPLATE_BYTES) in message
    assert invalid(text.encode("utf-8")) == message


def test_template_at_the_limit_accepted():
    """A template of exactly MAX_TEMPLATE_BYTES bytes is accepted."""
    text = SPEC_EXAMPLE + " " * (MAX_TEMPLATE_BYTES - len(SPEC_EXAMPLE))
    assert parse_template(text).name == "f14jeos"


def test_root_password_not_in_repr():
    """Neither repr() nor str() of a Template shows the root password."""
    template = parse_template(SPEC_EXAMPLE)
    assert "p@55w0rd!" not in repr(template)
    assert "p@55w0rd!" not in str(template)
    assert "f14jeos" in repr(template)


def test_root_password_not_in_validation_error():
    """An invalid template's message does not contain its root password."""
    text = SPEC_EXAMPLE.replace("x86_64", "sparc").replace("p@55w0rd!", "sparc-pw-123")
    message = invalid(text)
    assert "'sparc'" in message
    assert "sparc-pw-123" not in message


def test_root_password_with_markup_not_in_validation_error():
    """A root password containing an element is refused without quoting the password."""
    message = invalid(SPEC_EXAMPLE.replace("p@55w0rd!", "Secr3t<b/>Word"))
    assert "template/os/rootpw: unexpected element <b>" in message
    assert "Secr3t" not in message
    assert "Word" not in message


def test_root_password_not_in_syntax_error():
    """A syntax error caused by the root password does not quote the password."""
    message = invalid(SPEC_EXAMPLE.replace("p@55w0rd!", "abc<hunter2>"))
    assert "not well-formed XML" in message
    assert "hunter2" not in message


def test_several_problems_reported_together():
    """Independent problems in different elements are all listed, separated by ';'."""
    text = (
        SPEC_EXAMPLE.replace("<template>", "<template colour='blue'>")
        .replace("</os>", "<bogus/></os>")
        .replace("x86_64", "sparc")
    )
    message = invalid(text)
    assert message.count("; ") == 2
    assert "'sparc'" in message
    assert "unexpected element <bogus>" in message
    assert "unexpected attribute 'colour'" in message


def test_only_first_three_problems_reported(monkeypatch):
    """At most three problems are listed, followed by how many were left out."""
    problems = [f"problem {i}" for i in range(1, 6)]
    monkeypatch.setattr(template_module, "validate", lambda root: problems)
    message = invalid(SPEC_EXAMPLE)
    assert message == ("template is invalid: problem 1; problem 2; problem 3 (and 2 more)")


@pytest.mark.parametrize("pretty", [False, True])
@pytest.mark.parametrize(
    "install, expected",
    [
        ("<install type='ftp'><url>http://x/</url></install>", "attribute 'type' must be 'url' or 'iso', not 'ftp'"),
        ("<install><url>http://x/</url></install>", "attribute 'type' is required"),
        ("<install type='url'><iso>http://x/a.iso</iso></install>", "type 'url' needs exactly one <url>"),
        ("<install type='iso'><url>http://x/</url></install>", "type 'iso' needs one <iso>"),
    ],
)
def test_install_problems_explained(install, expected, pretty):
    """Install type/children mismatches get a specific message, compact or pretty-printed."""
    text = SPEC_EXAMPLE.replace(
        "<install type='url'><url>http://download.fedoraproject.org/pub/fedora/linux/releases"
        "/14/Fedora/x86_64/os/</url></install>",
        install,
    )
    assert install in text
    if pretty:
        text = etree.tostring(etree.fromstring(text), pretty_print=True).decode()
    message = invalid(text)
    assert "template/os/install: " in message
    assert expected in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<template/>", True),
        ("  \n\t<template/>", True),
        ("<?xml version='1.0'?><template/>", True),
        ("2c1fe0a8-6ae3-4a0e-b3a4-7d5d4c0b6e0f", False),
        ("http://example.com/template.tdl", False),
        ("", False),
    ],
)
def test_template_looks_like_xml(text, expected):
    """Inline XML is told apart from a UUID or a URL."""
    assert template_looks_like_xml(text) is expected


def test_schema_names_interleaved_elements_by_path():
    """Every element inside an <interleave> has a define named after its path (errors rely on it)."""
    ns = {"rng": "http://relaxng.org/ns/structure/1.0"}
    schema = tdl_schema.schema_document()
    refs = schema.xpath("//rng:interleave//rng:ref", namespaces=ns)
    assert refs
    for ref in refs:
        name = ref.get("name")
        define = schema.xpath("rng:define[@name=$n]", namespaces=ns, n=name)
        assert define, name
        element = define[0].find("rng:element", ns)
        assert element is not None, name
        assert name.split(".")[-1] == element.get("name")
    for element in schema.xpath("//rng:interleave//rng:element", namespaces=ns):
        # Only <choice>/<optional>/<ref> may sit between an interleave and an element.
        assert element.getparent().tag != f"{{{ns['rng']}}}interleave"
