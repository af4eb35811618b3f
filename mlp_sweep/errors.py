"""Errors a user can act on, and how the command line reports them."""

from __future__ import annotations

import sys


class UserError(Exception):
    """Bad input: printed as a one-line message, never with a traceback."""


class SweepExit(Exception):
    """Ends a sweep with an exit code; only the plugin entry turns it into the process's exit."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message or f"exit {code}")
        self.code, self.message = code, message


def fail(message: str, code: int = 2) -> None:
    """Print a user error without a traceback and exit 2 (as argparse does)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)
