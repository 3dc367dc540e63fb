"""The one exception type that means "the user asked for something impossible"."""


class UserError(Exception):
    """Bad input from the user (file, option, data); the CLI prints it on one line, exit 2."""
