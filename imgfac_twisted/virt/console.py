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

# CSI sequences (colours, cursor moves), OSC sequences (window titles), charset
# selections and the other two-byte escapes.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[()*+][0-~]|\x1b[@-Z\\-_]")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_console_line(raw: bytes) -> str:
    """One console line as text: UTF-8 (bad bytes replaced), escapes and control characters removed.

    A carriage return inside a line rewrote it on a terminal (progress
    counters do that), so only the text after the last one is kept.
    """
    text = _ESCAPES.sub("", raw.decode("utf-8", errors="replace")).rstrip("\r")
    if "\r" in text:
        text = text.rsplit("\r", 1)[-1]
    return _CONTROLS.sub("", text).rstrip()


class ConsoleTail:
    """Turns the console's bytes, as they come, into clean complete lines, and remembers the last few."""

    def __init__(self, keep: int) -> None:
        self._partial = b""
        #: The last ``keep`` non-empty lines.
        self.last: deque[str] = deque(maxlen=keep)

    def feed(self, data: bytes) -> list[str]:
        """The lines that ``data`` completed (blank lines left out)."""
        *complete, self._partial = (self._partial + data).split(b"\n")
        while len(self._partial) > LONGEST_CONSOLE_LINE:
            complete.append(self._partial[:LONGEST_CONSOLE_LINE])
            self._partial = self._partial[LONGEST_CONSOLE_LINE:]
        return self._keep(complete)

    def flush(self) -> list[str]:
        """The last, unterminated line, if any (the console has ended)."""
        rest, self._partial = self._partial, b""
        return self._keep([rest])

    def _keep(self, raw_lines: list[bytes]) -> list[str]:
        lines = [line for line in map(clean_console_line, raw_lines) if line]
        self.last.extend(lines)
        return lines


@dataclass(frozen=True)
class ConsoleCursor:
    """Where the next console read starts: the file (by inode) and the offset in it."""

    inode: int = 0
    offset: int = 0


def thd_read_console(path: str, cursor: ConsoleCursor,
                      limit: int = CONSOLE_READ_LIMIT) -> tuple[bytes, ConsoleCursor, str | None]:
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
