"""The serial console reader: clean lines out of a guest's raw console bytes, read in pieces from its log."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imgfac_twisted.virt.console import (
    LONGEST_CONSOLE_LINE,
    LONGEST_QUESTION,
    REDRAW_WINDOW,
    ConsoleCursor,
    ConsoleTail,
    QuestionSpotter,
    clean_console_line,
    console_pieces,
    thd_read_console,
)


def test_console_tail_keeps_long_lines_bounded() -> None:
    """A guest printing without newlines is passed on in pieces of LONGEST_CONSOLE_LINE."""
    tail = ConsoleTail(keep=3)
    lines = tail.feed(b"a" * LONGEST_CONSOLE_LINE + b"b" * LONGEST_CONSOLE_LINE + b"c" * 10)
    assert lines == ["a" * LONGEST_CONSOLE_LINE, "b" * LONGEST_CONSOLE_LINE]
    assert tail.pending() == ["c" * 10]
    assert tail.flush() == ["c" * 10]
    assert list(tail.last) == ["a" * LONGEST_CONSOLE_LINE, "b" * LONGEST_CONSOLE_LINE, "c" * 10]


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


@pytest.mark.parametrize(
    "raw, shown",
    [
        (b"\x1b[1;32m  OK  \x1b[0m] Started udev", "  OK  ] Started udev"),  # SGR colours
        (b"\x1b[?25l\x1b[?1049hmain\x1b[K", "main"),  # private modes, erase
        (b"\x1b]2;d-i\x1b\\title gone", "title gone"),  # OSC ended by ST
        (b"\x1bP1$r0m\x1b\\after DCS", "after DCS"),  # a DCS string
        (b"\x1b_screen hardstatus\x1b\\after APC", "after APC"),  # screen's APC string
        (b"\x1b=\x1b>\x1b%Gkeypad\x1b#8", "keypad"),  # keypad modes, charset, DECALN
        (b"\xc2\x9b1mC1 CSI", "C1 CSI"),  # 8-bit CSI, UTF-8 encoded
        (b"a\x1b[3Cb", "a b"),  # cursor forward is a blank
        (b"Retrieving file 1 of 9\rRetrieving file 9 of 9\r\x1b[K", "Retrieving file 9 of 9"),
    ],
)
def test_every_kind_of_terminal_sequence_is_removed(raw: bytes, shown: str) -> None:
    """CSI (7- and 8-bit), OSC, DCS/APC strings and short escapes leave only the text a terminal would show."""
    assert console_pieces(raw) == [shown]


def test_cursor_moves_to_another_line_split_a_line() -> None:
    """Text placed by absolute cursor moves (how screen and curses draw) comes out as separate lines."""
    raw = b"\x1b[H\x1b[2JInstalling the base system\x1b[23;1H\x1b[7m 0 installer \x1b[m\x1b8  3%"
    assert console_pieces(raw) == ["Installing the base system", " 0 installer", "  3%"]


def test_redrawn_lines_are_passed_on_once() -> None:
    """A status line redrawn every second, and a screen drawn again, are not repeated; a new line is."""
    tail = ConsoleTail(keep=50)
    status = b"\x1b7\x1b[24;1H\x1b[7m 0 installer  1 shell \x1b[m\x1b8"
    lines = tail.feed(b"Partitioning\r\n" + status + b"\r\n" + status * 5 + b"\r\n")
    lines += tail.feed(b"Partitioning\r\nInstalling the base system\r\n" + status + b"\r\n")
    assert lines == ["Partitioning", " 0 installer  1 shell", "Installing the base system"]
    assert list(tail.last) == lines


def test_a_line_seen_long_ago_is_passed_on_again() -> None:
    """Only repeats within REDRAW_WINDOW lines are redraws: the same message later is news."""
    tail = ConsoleTail(keep=5)
    tail.feed(b"Retrying\n")
    tail.feed(b"".join(b"line %d\n" % number for number in range(REDRAW_WINDOW)))
    assert tail.feed(b"Retrying\n") == ["Retrying"]


DEBIAN_INSTALLER_BOOLEAN = (
    b"Loading additional components\n"
    b"Configure the package manager\n"
    b"-----------------------------\n\n"
    b"The installer can use a network mirror. Continue without a network mirror?\n"
    b"  1: Yes [*]  2: No\n"
    b"Prompt: '?' for help, default=1> "
)


def test_debian_installer_question_is_spotted_in_the_unterminated_line() -> None:
    """cdebconf's prompt has no newline: the question is the screen's title on, the prompt left out."""
    tail, spotter = ConsoleTail(keep=20), QuestionSpotter()
    lines = tail.feed(DEBIAN_INSTALLER_BOOLEAN)
    assert spotter.spot(lines, tail.pending()) == (
        "Configure the package manager The installer can use a network mirror. Continue without a network mirror? "
        "1: Yes [*] 2: No"
    )


def test_debian_installer_error_note_is_a_question() -> None:
    """An error (a note too) waits for Enter: it is spotted, with its text."""
    tail, spotter = ConsoleTail(keep=20), QuestionSpotter()
    lines = tail.feed(
        b"Download debconf preconfiguration file\n--------------------------------------\n\n"
        b"!! ERROR: Failed to retrieve the preconfiguration file\n\n"
        b"The file needed for preconfiguration could not be retrieved.\n[Press enter to continue] "
    )
    assert spotter.spot(lines, tail.pending()) == (
        "Download debconf preconfiguration file !! ERROR: Failed to retrieve the preconfiguration file "
        "The file needed for preconfiguration could not be retrieved."
    )


def test_a_prompt_spread_over_polls_and_in_a_complete_line_is_spotted() -> None:
    """Context from earlier feeds counts; a prompt that got its newline is spotted among the complete lines."""
    spotter = QuestionSpotter()
    assert spotter.spot(["Installation", "1) [!] Root password"], []) is None
    assert spotter.spot(["Please make a selection from the above ['c' to continue, 'q' to quit]:"], []) == (
        "Installation 1) [!] Root password"
    )


def test_ordinary_output_is_no_question() -> None:
    """Kernel and installer output without a prompt says nothing; a long question is cut."""
    spotter = QuestionSpotter(keep=200)
    assert spotter.spot(["[    0.000000] Linux version 6.1.0", "Retrieving help text"], ["50%"]) is None
    assert spotter.spot(["word " * 100] * 10, ["Prompt: '?' for help> "]).endswith("...")
    assert len(spotter.spot([], ["Prompt: '?' for help> "])) == LONGEST_QUESTION


def test_a_prompt_with_nothing_before_it_is_quoted_itself() -> None:
    """Without any text before the prompt, the prompt line is the question."""
    assert QuestionSpotter().spot([], ["Prompt: '?' for help> "]) == "Prompt: '?' for help>"
