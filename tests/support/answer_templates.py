"""The template the answer-file tests generate kickstarts and preseeds from, and readers of what they print."""

import re

from imgfac_twisted.template import Template, parse_template

PASSWORD = "Zq9-answer-secret"


def template(name="Fedora", version="39", extra="", install=None):
    """A template of ``name``/``version`` with repositories, packages, a file and a command."""
    install = install or "<install type='url'><url>http://mirror.example.com/f/</url></install>"
    return parse_template(
        f"<template><name>t</name><os><name>{name}</name><version>{version}</version><arch>x86_64</arch>"
        f"{install}<rootpw>{PASSWORD}</rootpw></os>"
        "<repositories><repository name='extra'><url>http://repo.example.com/extra/</url>"
        "<sslverify>no</sslverify></repository></repositories>"
        "<packages><package name='vim-enhanced'/><package name='tmux'/></packages>"
        "<files><file name='/etc/motd'>hello motd</file></files>"
        f"<commands><command name='mark'>cat pre > marked-by-command; echo ran >> marked-by-command</command></commands>"
        f"<precommands><command name='pre'>echo pre > pre</command></precommands>{extra}</template>"
    )


def lines(text):
    """The lines of an answer file."""
    return text.splitlines()


def manifest_lines(printed):
    """The package lines between the markers, checking that everything printed is the manifest."""
    lines = printed.splitlines()
    assert lines[0] == "IMGFAC-MANIFEST-BEGIN" and lines[-1] == "IMGFAC-MANIFEST-END", printed[:500]
    body = lines[1:-1]
    for line in body:
        assert re.fullmatch(r"IMGFAC-PKG [^ ]+ [^ ]+ [^ ]+", line), line
    return body


def kickstart_template(name: str, version: str) -> Template:
    """A template of that release using every feature a kickstart has."""
    return parse_template(
        f"<template><name>ks</name><os><name>{name}</name><version>{version}</version><arch>x86_64</arch>"
        "<install type='url'><url>http://mirror.example.com/tree/</url></install><rootpw>pw</rootpw></os>"
        "<repositories><repository name='extra repo'><url>https://repo.example.com/extra/</url>"
        "<signed>no</signed><sslverify>no</sslverify></repository>"
        "<repository name='plain'><url>http://repo.example.com/plain/</url><persisted>no</persisted>"
        "</repository></repositories>"
        "<packages><package name='tmux'/><package name='openssh-server'/></packages>"
        "<files><file name='/etc/motd'>hello</file></files>"
        "<commands><command name='c'>echo done &gt; /root/done</command></commands>"
        "<precommands><command name='p'>echo pre</command></precommands></template>"
    )
