"""The one error type a user can cause: the CLI prints it as a single line and exits with code 2."""


class UserError(Exception):
    """Bad input (file, key, value, reference): the message says what, where, and how to fix it. It is one line
    whatever it quotes: a control character from the input (a key holding a newline) is shown escaped."""

    def __init__(self, message: str) -> None:
        super().__init__("".join(repr(c)[1:-1] if c < " " or c == "\x7f" else c for c in message))


def utf8_text(where: object, data: bytes, line_offset: int = 0) -> str:
    """`data` decoded as UTF-8, or a UserError naming `where`, the line and the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = line_offset + data[:exc.start].count(b"\n") + 1
        raise UserError(f"{where}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8 "
                        "(from a spreadsheet: CSV UTF-8)") from None
