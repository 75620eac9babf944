"""The one error type a user can cause: the CLI prints it as a single line and exits with code 2."""


class UserError(Exception):
    """Bad input (file, key, value, reference): the message says what, where, and how to fix it."""
