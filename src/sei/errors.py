"""The one exception type for user mistakes (bad flag, missing file, wrong weights).

The CLI prints it as a single line and exits with code 2; anything else is a bug or a
runtime failure and exits with code 1.
"""


class SeiUserError(Exception):
    """A mistake in what the user asked for; the message says what was wrong and how to fix it."""
