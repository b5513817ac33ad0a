"""Names the command line's parsing (``cli.py``) and its run (``run.py``) share: one module both import."""
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


def closest(name, choices):
    """' (did you mean X?)' for the nearest choice, or ''."""
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def roles(args) -> tuple[bool, bool]:
    """(has_content, has_style): --mode transfer uses both, content only the first, texture the second."""
    return args.mode != "texture", args.mode != "content"
