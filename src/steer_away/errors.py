"""The one base class for "the input is wrong": a flag, a config, a file, an argument.

Library code raises `InputError` (or a subclass that names the kind of input) when what it was
given cannot be used, with a message that says what and where; the command line prints those as
one line, and the server answers them with 400. Any other exception is a bug and keeps its traceback.
"""


class InputError(ValueError):
    """What the caller gave cannot be used; the message names what is wrong and where."""
