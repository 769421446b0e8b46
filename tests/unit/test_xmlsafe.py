"""Tests of the hardened XML parser (imgfac_twisted.xmlsafe)."""

import pytest

from imgfac_twisted import xmlsafe
from imgfac_twisted.errors import InvalidCredentials
from imgfac_twisted.xmlsafe import parse_xml


def parse(data, **kwargs):
    kwargs.setdefault("max_bytes", 4096)
    kwargs.setdefault("what", "document")
    return parse_xml(data, **kwargs)


def test_parses_str_and_bytes():
    """A well-formed document given as str or bytes yields its root element."""
    for data in ("<a><b>x</b></a>", b"<a><b>x</b></a>"):
        root = parse(data)
        assert root.tag == "a"
        assert root.findtext("b") == "x"


def test_str_with_encoding_declaration_parses():
    """A str carrying an XML declaration with an encoding is accepted (lxml alone refuses it)."""
    root = parse('<?xml version="1.0" encoding="UTF-8"?>\n<a>caf\u00e9</a>')
    assert root.text == "caf\u00e9"


def test_str_is_parsed_as_text_whatever_its_declared_encoding():
    """A str's non-ASCII text is kept even if its declaration names another encoding."""
    root = parse('<?xml version="1.0" encoding="ISO-8859-1"?><a>\u00e9\u20ac</a>')
    assert root.text == "\u00e9\u20ac"


def test_bytes_declared_encoding_is_honoured():
    """Bytes are decoded according to their XML declaration."""
    data = '<?xml version="1.0" encoding="ISO-8859-1"?><a>\u00e9</a>'.encode("latin-1")
    assert parse(data).text == "\u00e9"


def test_comments_and_processing_instructions_are_dropped():
    """Comments and processing instructions do not survive parsing."""
    root = parse("<a><!-- note --><?pi data?><b/></a>")
    assert [child.tag for child in root] == ["b"]


def test_oversize_bytes_refused_before_parsing_with_limit_in_message():
    """Input over max_bytes is refused; the message names the document and the limit."""
    data = b"<a>" + b"x" * 100 + b"</a>"
    with pytest.raises(ValueError) as info:
        parse(data, max_bytes=50, what="credentials")
    assert "credentials" in str(info.value)
    assert "50" in str(info.value)


def test_oversize_str_counts_utf8_bytes():
    """A str is measured in UTF-8 bytes: 20 two-byte characters exceed 45 bytes."""
    text = "<a>" + "\u00e9" * 20 + "</a>"  # 47 bytes, 27 characters
    assert len(text) < 45
    with pytest.raises(ValueError, match="45 bytes"):
        parse(text, max_bytes=45)
    assert parse(text, max_bytes=47).text == "\u00e9" * 20


def test_document_at_exactly_the_limit_is_accepted():
    """A document of exactly max_bytes bytes is not refused."""
    data = b"<a>" + b"x" * 10 + b"</a>"
    assert parse(data, max_bytes=len(data)).text == "x" * 10


def test_custom_error_type_is_raised():
    """The error class passed by the caller is the one raised."""
    with pytest.raises(InvalidCredentials) as info:
        parse("<a>", what="credentials", error=InvalidCredentials)
    assert info.value.message.startswith("credentials is not well-formed XML: ")


def test_syntax_error_message_has_position_but_not_lxml_filename():
    """A syntax error names the document, lxml's reason, line and column."""
    with pytest.raises(ValueError) as info:
        parse("<a>\n<b></c></a>", what="template")
    message = str(info.value)
    assert message.startswith("template is not well-formed XML: ")
    assert "line 2" in message
    assert "column" in message
    assert "<string>" not in message


def test_empty_and_blank_input_refused():
    """Empty or whitespace-only input is refused as empty."""
    for data in ("", "   \n", b""):
        with pytest.raises(ValueError, match="document is empty"):
            parse(data)


def test_non_xml_refused():
    """Plain text is not well-formed XML."""
    with pytest.raises(ValueError, match="not well-formed XML"):
        parse("just some text")


def test_wrong_input_type_is_a_type_error():
    """Anything but str or bytes is a programming error."""
    with pytest.raises(TypeError):
        parse(12)


def test_external_entity_refused_and_file_not_read():
    """XXE: a SYSTEM entity is refused and the file's contents never reach the message."""
    data = '<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>'
    with pytest.raises(ValueError) as info:
        parse(data)
    assert "DOCTYPE" in str(info.value)
    assert "root:" not in str(info.value)


def test_billion_laughs_refused():
    """Nested internal entities (billion laughs) are refused."""
    entities = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10)
    )
    data = f"<!DOCTYPE lolz [{entities}]><lolz>&lol9;</lolz>"
    with pytest.raises(ValueError, match="DOCTYPE"):
        parse(data, max_bytes=1 << 20)


def test_external_dtd_refused():
    """A DOCTYPE referencing an external DTD over the network is refused."""
    with pytest.raises(ValueError, match="DOCTYPE"):
        parse('<!DOCTYPE a SYSTEM "http://127.0.0.1:9/x.dtd"><a/>')


def test_plain_doctype_refused():
    """Even a harmless DOCTYPE without a subset is refused."""
    with pytest.raises(ValueError, match="DOCTYPE"):
        parse("<!DOCTYPE a><a/>")


def test_utf16_doctype_refused():
    """The DOCTYPE scan also covers UTF-16 encoded input."""
    data = '<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>'.encode("utf-16")
    with pytest.raises(ValueError, match="DOCTYPE"):
        parse(data)


def test_doctype_refused_after_parse_if_scan_misses_it(monkeypatch):
    """Defence in depth: with the byte scan disabled, the parsed DTD is still refused."""
    monkeypatch.setattr(xmlsafe, "_FORBIDDEN_BYTES", ())
    monkeypatch.setattr(xmlsafe, "_FORBIDDEN_MARKUP", ())
    data = '<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>'
    with pytest.raises(ValueError, match="DOCTYPE") as info:
        parse(data)
    assert "root:" not in str(info.value)


def test_undeclared_entity_refused():
    """An entity reference without a declaration is a well-formedness error."""
    with pytest.raises(ValueError, match="not well-formed"):
        parse("<a>&x;</a>")


def test_parser_options_are_hardened():
    """The parser configuration never resolves entities, loads DTDs or uses the network."""
    options = xmlsafe.PARSER_OPTIONS
    assert options["resolve_entities"] is False
    assert options["no_network"] is True
    assert options["load_dtd"] is False
    assert options["dtd_validation"] is False
    assert options["huge_tree"] is False
