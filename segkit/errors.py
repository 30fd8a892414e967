"""The one exception segkit raises for bad input: a single line naming the file or value and what is wrong."""


class SegkitError(Exception):
    """Bad input or state the user can fix. The CLI prints it as one line and exits non-zero."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
