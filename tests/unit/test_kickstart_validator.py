"""Every kickstart the factory can write passes anaconda's own validator (pykickstart's ``ksvalidator``).

Each Fedora, RHEL and CentOS release the Red Hat family plug-ins accept is
checked against pykickstart's syntax of that release (``F39``, ``RHEL9``;
``DEVEL``, the newest, for rawhide and for releases newer than the installed
pykickstart knows), from a URL tree and from a CD-ROM, with a template using
every feature the kickstart has: repositories (unverified TLS, persisted),
packages, files, commands and precommands.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from pykickstart import version as ks_version
from pykickstart.errors import KickstartError, KickstartParseWarning
from pykickstart.parser import KickstartParser

from imgfac_twisted.os import kickstart
from imgfac_twisted.os.trees import UnknownRelease
from support.answer_templates import kickstart_template


def _newest(prefix: str) -> int:
    """The newest release pykickstart knows with names ``<prefix><number>``."""
    return max(
        int(name[len(prefix) :])
        for name in ks_version.versionMap
        if name[len(prefix) :].isdigit() and name.startswith(prefix)
    )


NEWEST_FEDORA = _newest("F")
NEWEST_RHEL = _newest("RHEL")

#: (os name, os version) of every release the plug-ins take: each number from the oldest accepted to one past
#: the newest pykickstart knows, in every spelling of the names (Oz's RHEL-7 style with its own version field).
RELEASES = (
    [("Fedora", str(major)) for major in range(kickstart.OLDEST_FEDORA, NEWEST_FEDORA + 2)]
    + [("Fedora", "rawhide")]
    + [
        (name, f"{major}.4")
        for major in range(kickstart.OLDEST_RHEL, NEWEST_RHEL + 2)
        for name in ("RHEL", "CentOS", "RedHat")
    ]
    + [(f"RHEL-{major}", "2") for major in range(kickstart.OLDEST_RHEL, NEWEST_RHEL + 2)]
    + [("CentOS", f"{major}-stream") for major in (8, 9, 10)]
    + [("CentOS-Stream", str(major)) for major in (8, 9, 10)]
    + [("CentOS-Stream", "stream")]
)


def pykickstart_version(name: str) -> int:
    """pykickstart's version constant for a syntax name: a release it does not know yet is its newest, DEVEL."""
    return ks_version.versionMap.get(name, ks_version.DEVEL)


def validate(text: str, syntax: int) -> list[str]:
    """What ksvalidator says of a kickstart: the problems it counts (none when valid).

    As ksvalidator does: parse warnings are errors, a deprecated command or
    option is an error, and every error is counted rather than the first
    stopping the parse.
    """
    handler = ks_version.makeVersion(syntax)
    parser = KickstartParser(handler, errorsAreFatal=False)
    problems: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", KickstartParseWarning)
        try:
            parser.readKickstartFromString(text)
        except (KickstartError, KickstartParseWarning) as error:
            problems.append(str(error))
    if parser.errorsCount and not problems:
        problems.append(f"{parser.errorsCount} error(s), reported on stderr")
    return problems


@pytest.mark.parametrize("tree_url", ["http://mirror.example.com/tree/", None], ids=["url", "cdrom"])
@pytest.mark.parametrize("name, version", RELEASES, ids=[f"{n}-{v}" for n, v in RELEASES])
def test_every_kickstart_passes_ksvalidator(name: str, version: str, tree_url: str | None) -> None:
    """The kickstart of each accepted release is valid in that release's syntax, and says which it is."""
    release = kickstart_template(name, version)
    text = kickstart.kickstart(release, tree_url)
    syntax = kickstart.syntax_version(release)
    assert text.splitlines()[1] == f"#version={syntax}"
    assert validate(text, pykickstart_version(syntax)) == []


@pytest.mark.parametrize(
    "name, version, syntax",
    [
        ("Fedora", "39", "F39"),
        ("Fedora", "rawhide", "DEVEL"),
        ("RHEL", "9.4", "RHEL9"),
        ("RHEL-8", "10", "RHEL8"),
        ("CentOS", "8-stream", "RHEL8"),
        ("CentOS-Stream", "9", "RHEL9"),
        ("RedHat", "7.9", "RHEL7"),
    ],
)
def test_releases_map_to_pykickstart_names(name: str, version: str, syntax: str) -> None:
    """Fedora N is FN, RHEL and CentOS N (Stream too) RHELN, a release without a number DEVEL."""
    assert kickstart.syntax_version(kickstart_template(name, version)) == syntax


@pytest.mark.parametrize(
    "name, version, message",
    [
        ("Fedora", "13", "Fedora 13 is too old: kickstarts are written for Fedora 14 and newer"),
        ("CentOS", "5.11", "CentOS 5.11 is too old: kickstarts are written for RHEL and CentOS 6 and newer"),
        ("RHEL-5", "11", "RHEL-5 11 is too old: kickstarts are written for RHEL and CentOS 6 and newer"),
    ],
)
def test_releases_older_than_the_validated_ones_are_refused(name: str, version: str, message: str) -> None:
    """A release whose anaconda lacks the options used is refused by name, not given a kickstart it would reject."""
    with pytest.raises(UnknownRelease) as refused:
        kickstart.kickstart(kickstart_template(name, version), None)
    assert str(refused.value) == message


def test_the_validator_refuses_what_anaconda_would(tmp_path: Path) -> None:
    """The check can fail: an option the release does not have, and an unknown command, are reported."""
    text = kickstart.kickstart(kickstart_template("Fedora", "39"), None)
    assert validate(text.replace("autopart --type=plain", "autopart --type=plain --nosuch"), ks_version.F39)
    assert validate(text + "frobnicate --now\n", ks_version.F39)
    # RHEL 6's anaconda had no --vckeymap (the modern keyboard line is for RHEL 7 on).
    assert validate(kickstart.kickstart(kickstart_template("RHEL", "7.9"), None), ks_version.RHEL6)
