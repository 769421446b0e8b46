"""What kickstarts and preseeds share: the hashed root password and the post-install script.

The root password is written as a SHA-512 crypt hash with a random salt
(``$6$...``), which both anaconda (``rootpw --iscrypted``) and debian-installer
(``passwd/root-password-crypted``) accept: the initrd then never holds the
password itself.  The hash comes from the C library's crypt(3) through the
standard ``crypt`` module (deprecated since Python 3.11, still there on the
3.11 the project runs on; no new dependency for one function).
"""

from __future__ import annotations

import base64
import posixpath
import secrets
import shlex
import warnings

from ..errors import ImageFactoryError, InvalidTemplate
from ..template import Command, Template

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

#: A random password is set when the template gives none, so no image ships an empty one.
RANDOM_PASSWORD_BYTES = 24

#: The installed system's consoles, on its kernel command line: the screen, and the first serial port last
#: (the one /dev/console is), which the boot test watches for the login prompt and clouds show as the
#: instance's console output (EC2 get-console-output, GCE's serial port).
INSTALLED_CONSOLES = "console=tty0 console=ttyS0,115200n8"
#: The serial port whose output the factory reads (QEMU writes it to the build's console log).
SERIAL_PORT = "/dev/ttyS0"
#: The package manifest, the answer file's very last step, is printed on SERIAL_PORT as::
#:
#:     IMGFAC-MANIFEST-BEGIN
#:     IMGFAC-PKG <name> <version> <arch>     (one line per installed package; the version with its epoch)
#:     IMGFAC-MANIFEST-END
#:
#: and read back from the console by os/manifest.py.
MANIFEST_BEGIN = "IMGFAC-MANIFEST-BEGIN"
MANIFEST_PACKAGE = "IMGFAC-PKG"
MANIFEST_END = "IMGFAC-MANIFEST-END"


def one_line(value: str, what: str) -> str:
    """``value`` unchanged; InvalidTemplate if it would break out of its line of the answer file."""
    if any(c in value for c in "\r\n\0"):
        raise InvalidTemplate(f"template is invalid: {what} must be on one line")
    return value


def hash_password(password: str) -> str:
    """A SHA-512 crypt hash of ``password`` with a fresh random salt."""
    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))
    if not hashed or not hashed.startswith("$6$"):
        raise ImageFactoryError("this system's crypt(3) cannot make SHA-512 password hashes")
    return hashed


def root_password_hash(template: Template) -> str:
    """The hash of the template's root password (of a random one when it has none)."""
    password = template.root_password
    if not password:
        password = secrets.token_urlsafe(RANDOM_PASSWORD_BYTES)
    return hash_password(password)


def _decode_into(data: bytes, target: str) -> str:
    """Shell lines writing ``data`` to ``target`` through base64 (no quoting pitfalls)."""
    encoded = base64.b64encode(data).decode("ascii")
    chunks = [encoded[i : i + 76] for i in range(0, len(encoded), 76)] or [""]
    return "\n".join(
        [
            f"mkdir -p {shlex.quote(posixpath.dirname(target) or '/')}",
            f"base64 -d > {shlex.quote(target)} <<'IMGFAC_EOF'",
            *chunks,
            "IMGFAC_EOF",
        ]
    )


def post_install_script(template: Template, shebang: bool = True, root: str = "") -> str:
    """A POSIX shell script, run in the installed system: precommands, then files, then commands (as Oz).

    ``root`` is put in front of every path written (tests run the script in a folder).
    """
    lines = ["#!/bin/sh"] if shebang else []
    lines += ["# Files and commands of the template, written by Image Factory.", "set -e"]
    for index, command in enumerate(template.precommands, 1):
        lines += _run_script(command, f"{root}/root/imgfac-precommand-{index}.sh")
    for item in template.files:
        lines.append(_decode_into(item.content, root + item.path))
    for index, command in enumerate(template.commands, 1):
        lines += _run_script(command, f"{root}/root/imgfac-command-{index}.sh")
    return "\n".join(lines) + "\n"


def _run_script(command: Command, script: str) -> list[str]:
    """Lines that write a command's script to ``script``, run it and remove it."""
    return [
        f"# command {command.name!r}",
        _decode_into(command.script.encode("utf-8"), script),
        f"sh {shlex.quote(script)}",
        f"rm -f {shlex.quote(script)}",
    ]


def manifest_script(list_packages: str) -> str:
    """A POSIX shell script printing the package manifest on its standard output.

    ``list_packages`` is a shell command printing one ``IMGFAC-PKG <name>
    <version> <arch>`` line per installed package, run in the installed
    system: reading its package database needs no network.
    """
    return (
        "\n".join(
            [
                "# The installed packages, for Image Factory's package manifest.",
                f"echo {MANIFEST_BEGIN}",
                list_packages,
                f"echo {MANIFEST_END}",
            ]
        )
        + "\n"
    )
