"""The one error type a user can cause: the CLI prints it as a single line and exits with code 2; `printable`, which
keeps whatever a user named on the one line it is printed on; and the checks every file a user names goes through."""

from __future__ import annotations

from pathlib import Path


def printable(text: str) -> str:
    """`text` with its control characters shown escaped (a newline as \\n, an ANSI escape as \\x1b): a name from a
    user's file (a grid, a dataset, a model folder) printed in a line cannot start another line or recolour the
    terminal, so it cannot forge a line of the log."""
    return "".join(repr(c)[1:-1] if c < " " or "\x7f" <= c <= "\x9f" else c for c in text)


class UserError(Exception):
    """Bad input (file, key, value, reference): the message says what, where, and how to fix it. It is one line
    whatever it quotes (`printable`)."""

    def __init__(self, message: str) -> None:
        super().__init__(printable(message))


def utf8_text(where: object, data: bytes, line_offset: int = 0) -> str:
    """`data` decoded as UTF-8, or a UserError naming `where`, the line and the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = line_offset + data[:exc.start].count(b"\n") + 1
        raise UserError(f"{where}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8 "
                        "(from a spreadsheet: CSV UTF-8)") from None


def check_file(name: str | Path, what: str, hint: str) -> None:
    """Fail with one line unless the file `name` (as the user wrote it) is a regular file, saying what it is instead:
    missing, a folder, or a device or a pipe (reading one would never end, or block); `what` names it ("grid
    file"), `hint` says how to fix it."""
    path = Path(name)
    if path.is_file():
        return
    if not path.exists():
        raise UserError(f"{what} '{name}' does not exist (looked at {path.absolute()}); {hint}")
    kind = "a folder" if path.is_dir() else "a device or a pipe, not a regular file"
    raise UserError(f"{what} '{name}' is {kind}; {hint}")
