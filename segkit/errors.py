"""The one exception segkit raises for bad input: a single line naming the file or value and what is wrong."""


class SegkitError(Exception):
    """Bad input or state the user can fix. The CLI prints it as one line and exits non-zero."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def first_line(err) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
