"""The one exception type that the CLI turns into a one-line ``error: ...``."""


class XctregError(Exception):
    """Bad input or an unrecoverable condition the user can fix.

    The message must be one line and say what is wrong and, where possible,
    what to do about it. The CLI prints it as ``error: <message>`` and exits 1.
    """
