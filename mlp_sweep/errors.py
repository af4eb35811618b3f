"""The one exception type for mistakes a user can fix (config, data files, paths)."""


class UserError(Exception):
    """Bad input: printed as a one-line message, never with a traceback."""
