"""The serial console of a guest: its log file read in pieces, and turned into clean lines.

QEMU (through virtlogd) writes everything the guest prints on its first
serial port into a file.  ``thd_read_console`` reads the new bytes of that
file on a thread; ``ConsoleTail`` turns them, as they come, into clean
complete lines for the build log and remembers the last few for failure
reasons.
"""

from __future__ import annotations

import os
import re
from collections import deque
from dataclasses import dataclass

#: The most console bytes read in one poll; the rest is read by the next polls.
CONSOLE_READ_LIMIT = 1024 * 1024
#: A console line longer than this is passed on in pieces (a guest printing
#: without newlines must not grow our memory).
LONGEST_CONSOLE_LINE = 4096

#: A line equal to one of this many lines just before it is dropped:
#: a full-screen program (GNU screen, around debian-installer on the serial
#: port) redraws the same lines, its status line every second.
REDRAW_WINDOW = 24
#: The most lines of context a question's text holds, and the most characters.
QUESTION_LINES = 12
LONGEST_QUESTION = 1000

# Every escape sequence of ECMA-48 and the VT100 family, in the order tried:
# CSI (colours, cursor moves, erasing; 7- and 8-bit), OSC (window titles, up
# to BEL or ST), DCS/SOS/PM/APC strings (up to ST), and the short ones
# (charset selections, keypad modes, save/restore cursor, reset...).
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x9b[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"
    r"|\x1b[ -/]*[0-~]"
)
# The escapes that put the cursor on another line (an absolute position, the
# next or previous line, a row, the saved position, a reverse line feed):
# what follows them is another line, not the rest of this one.
_LINE_MOVES = re.compile(r"\x1b\[[0-9;]*[HfdEF]|\x9b[0-9;]*[HfdEF]|\x1b\[[su]|\x1b[78DEM]")
# Cursor-forward moves stand for blanks (curses draws spaces that way).
_BLANKS = re.compile(r"\x1b\[[0-9]*C")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_console_line(raw: bytes) -> str:
    """One piece of a console line as text: UTF-8 (bad bytes replaced), escapes and control characters removed.

    A carriage return inside a line rewrote it on a terminal (progress
    counters do that), so only the text after the last one is kept.
    """
    return _clean_text(raw.decode("utf-8", errors="replace"))


def console_pieces(raw: bytes) -> list[str]:
    """A raw console line as the clean lines a terminal would show: split where the cursor moves to another line.

    Blank pieces are left out.
    """
    text = _BLANKS.sub(" ", raw.decode("utf-8", errors="replace"))
    return [piece for piece in map(_clean_text, _LINE_MOVES.split(text)) if piece]


def _clean_text(text: str) -> str:
    text = _ESCAPES.sub("", text).rstrip("\r")
    if "\r" in text:
        text = text.rsplit("\r", 1)[-1]
    return _CONTROLS.sub("", text).rstrip()


class ConsoleTail:
    """Turns the console's bytes, as they come, into clean complete lines, and remembers the last few.

    A line repeating one of the REDRAW_WINDOW lines just before it is a
    redraw and is dropped.
    """

    def __init__(self, keep: int) -> None:
        self._partial = b""
        self._recent: deque[str] = deque(maxlen=REDRAW_WINDOW)
        #: The last ``keep`` lines passed on.
        self.last: deque[str] = deque(maxlen=keep)

    def feed(self, data: bytes) -> list[str]:
        """The new lines that ``data`` completed (blank lines and redraws left out)."""
        *complete, self._partial = (self._partial + data).split(b"\n")
        while len(self._partial) > LONGEST_CONSOLE_LINE:
            complete.append(self._partial[:LONGEST_CONSOLE_LINE])
            self._partial = self._partial[LONGEST_CONSOLE_LINE:]
        return self._keep(complete)

    def flush(self) -> list[str]:
        """The last, unterminated line, if any (the console has ended)."""
        rest, self._partial = self._partial, b""
        return self._keep([rest])

    def pending(self) -> list[str]:
        """The clean pieces of the line not terminated yet: where a program waiting for input left its prompt."""
        return console_pieces(self._partial)

    def _keep(self, raw_lines: list[bytes]) -> list[str]:
        lines = []
        for raw in raw_lines:
            for line in console_pieces(raw):
                if line not in self._recent:
                    lines.append(line)
                self._recent.append(line)
        self.last.extend(lines)
        return lines


class QuestionSpotter:
    """Fed the clean console lines, says when an installer has stopped to ask a question, and which.

    The installers ask only when their answer file left a question open;
    each ends a question with its own prompt, printed without a newline:

    - debian-installer's text frontend (cdebconf ``text.c``) prints a
      screen's title underlined with dashes, the question's extended
      description and description, the choices, then
      ``Prompt: '?' for help>`` (``, default=...>`` when there is one); a
      note or an error (``!! ERROR: ...``) ends with ``[Press enter to
      continue]``;
    - anaconda's text mode (simpleline) frames a screen with a rule of
      ``=`` and ends it with ``Please make a selection from the above
      ['c' to continue, ...]:``.

    The question is the text since the screen began (its title on), at most
    QUESTION_LINES lines.
    """

    PROMPTS = ("Prompt: '?' for help", "[Press enter to continue]", "Please make a selection from the above")

    def __init__(self, keep: int = QUESTION_LINES) -> None:
        self._screen: deque[str] = deque(maxlen=keep)

    def spot(self, lines: list[str], pending: list[str]) -> str | None:
        """The question being asked, if ``lines`` (complete, new) or ``pending`` (the unterminated line) end one."""
        for line in lines:
            if self._is_prompt(line):
                return self._question(line)
            self._remember(line)
        for piece in pending:
            if self._is_prompt(piece):
                return self._question(piece)
        return None

    def _is_prompt(self, line: str) -> bool:
        return any(prompt in line for prompt in self.PROMPTS)

    def _remember(self, line: str) -> None:
        rule = line.strip()
        if len(rule) >= 3 and len(set(rule)) == 1 and rule[0] in "-=":
            # A new screen: d-i's title is the line above its dashes; anaconda's rule comes before its title.
            title = self._screen[-1] if rule[0] == "-" and self._screen else None
            self._screen.clear()
            if title is not None:
                self._screen.append(title)
            return
        self._screen.append(line)

    def _question(self, prompt_line: str) -> str:
        lines = list(self._screen) or [prompt_line]
        text = " ".join(" ".join(lines).split())
        return text if len(text) <= LONGEST_QUESTION else text[: LONGEST_QUESTION - 3] + "..."


@dataclass(frozen=True)
class ConsoleCursor:
    """Where the next console read starts: the file (by inode) and the offset in it."""

    inode: int = 0
    offset: int = 0


def thd_read_console(
    path: str, cursor: ConsoleCursor, limit: int = CONSOLE_READ_LIMIT
) -> tuple[bytes, ConsoleCursor, str | None]:
    """Up to ``limit`` new bytes of the console log, the cursor after them, and why it cannot be read (or None).

    Another file than last time (virtlogd, which writes the log for QEMU,
    rotates it at its size limit) or a shorter one is read from its start.
    No file yet is no output yet.
    """
    try:
        with open(path, "rb") as console:
            status = os.fstat(console.fileno())
            offset = cursor.offset
            if status.st_ino != cursor.inode or status.st_size < offset:
                offset = 0
            console.seek(offset)
            data = console.read(limit)
    except FileNotFoundError:
        return b"", cursor, None
    except OSError as error:
        return b"", cursor, f"the console log {path} cannot be read: {error.strerror}"
    return data, ConsoleCursor(status.st_ino, offset + len(data)), None
