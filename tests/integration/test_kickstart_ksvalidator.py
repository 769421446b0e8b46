"""pykickstart's own ksvalidator command, run as a process, agrees with the in-process validation of every
generated kickstart (that validation: tests/unit/test_kickstart_validator.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imgfac_twisted.os import kickstart
from support.answer_templates import kickstart_template


@pytest.mark.parametrize("name, version", [("Fedora", "39"), ("RHEL", "9.4"), ("CentOS", "6.10")])
def test_the_ksvalidator_command_agrees(tmp_path: Path, name: str, version: str) -> None:
    """pykickstart's own ksvalidator command, run with -v <release>, accepts the kickstart file."""
    command = shutil.which("ksvalidator", path=str(Path(sys.executable).parent))
    if command is None:
        pytest.skip("the ksvalidator command is not installed next to this Python")
    release = kickstart_template(name, version)
    path = tmp_path / "ks.cfg"
    path.write_text(kickstart.kickstart(release, "http://mirror.example.com/tree/"))
    checked = subprocess.run(
        [command, "-v", kickstart.syntax_version(release), str(path)], capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Without -v it reads the #version= line.
    assert subprocess.run([command, str(path)], capture_output=True, timeout=120).returncode == 0
