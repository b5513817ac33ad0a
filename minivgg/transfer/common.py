"""Names the command line's modules share: the program's name, its errors and how they are said."""
from __future__ import annotations

import difflib
import sys

PROG = "python -m minivgg.transfer"
INIT_CHOICES = ("noise", "content", "style")


class UsageError(Exception):
    """A bad option or argument: reported as one line, exit code 2."""


def report_error(message: str) -> None:
    """The one line every refusal or failure prints on stderr."""
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def report_warning(message: str) -> None:
    """One line on stderr about something that went wrong while the run goes on (even with --quiet)."""
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def closest(name, choices):
    """' (did you mean X?)' for the nearest choice, or ''."""
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""
