"""The serial console reader: clean lines out of a guest's raw console bytes, read in pieces from its log."""

from __future__ import annotations

import os
from pathlib import Path

from imgfac_twisted.virt.console import (LONGEST_CONSOLE_LINE, ConsoleCursor, ConsoleTail, clean_console_line,
                                         thd_read_console)


def test_console_tail_keeps_long_lines_bounded() -> None:
    """A guest printing without newlines is passed on in pieces of LONGEST_CONSOLE_LINE."""
    tail = ConsoleTail(keep=3)
    lines = tail.feed(b"x" * (LONGEST_CONSOLE_LINE * 2 + 10))
    assert lines == ["x" * LONGEST_CONSOLE_LINE] * 2
    assert tail.flush() == ["x" * 10]
    assert list(tail.last) == ["x" * LONGEST_CONSOLE_LINE] * 2 + ["x" * 10]


def test_clean_console_line_strips_terminal_codes() -> None:
    """OSC titles, charset selections and DEL are removed; tabs stay."""
    assert clean_console_line(b"\x1b]0;anaconda\x07\x1b(Bmain\tpane\x7f") == "main\tpane"


def test_console_is_read_incrementally_and_again_after_rotation(tmp_path: Path) -> None:
    """Only new bytes are read; a shorter file, or another file (virtlogd rotated it), is read from 0."""
    path = tmp_path / "console.log"
    path.write_bytes(b"0123456789")
    data, cursor, problem = thd_read_console(str(path), ConsoleCursor())
    assert (data, cursor.offset, problem) == (b"0123456789", 10, None)
    with open(path, "ab") as console:
        console.write(b"ab")
    data, cursor, _ = thd_read_console(str(path), cursor)
    assert (data, cursor.offset) == (b"ab", 12)
    path.write_bytes(b"new\n")
    data, cursor, _ = thd_read_console(str(path), cursor)
    assert (data, cursor.offset) == (b"new\n", 4)
    os.rename(path, tmp_path / "console.log.0")
    path.write_bytes(b"0123456789rotated\n")
    assert thd_read_console(str(path), cursor)[0] == b"0123456789rotated\n"
    missing = ConsoleCursor(5, 7)
    assert thd_read_console(str(tmp_path / "missing"), missing) == (b"", missing, None)
