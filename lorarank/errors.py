"""The one exception type users see: its message is printed as a single line, exit code 2."""


class UserError(Exception):
    """Bad input from the user: the message names the value and what is allowed."""
