"""The one exception type that means "the user asked for something impossible"."""


class UserError(ValueError):
    """Bad input from the user (file, option, data): the CLI prints it on one line and exits
    with status 2; from Python it is a ``ValueError``."""
