"""The one base class for "the input is wrong": a flag, a config, a file, an argument.

Library code raises `InputError` (or a subclass that names the kind of input) when what it was
given cannot be used, with a message that says what and where; the command line prints those as
one line, and the server answers them with 400. Any other exception is a bug and keeps its traceback.
"""


class InputError(ValueError):
    """What the caller gave cannot be used; the message names what is wrong and where.

    Always one line: a message quoting the input (a key, a field, a file's text) has its control
    characters escaped, so a newline in a crafted key cannot split an error or forge a log line
    (found by the fuzz tests)."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(one_line(str(message)), *args)


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters written as escapes (`\\n`, `\\x1b`)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)
