"""The exceptions the ``weights`` package raises for anything it cannot use.

Every malformed, damaged, unexpected or unreachable input (a truncated
download, a flipped byte in a cache file, a pickle that names a forbidden
global, a missing layer, pip without network) ends up as ``WeightsError``
with a message that says what was expected and what was found. It subclasses
``ValueError`` so callers that already catch bad-value errors keep working.

``CacheFolderError`` is the subclass for a cache folder that cannot take a
build (read-only, a file in the way, no space left): its one-line message
names the folder and what to do. Being a ``WeightsError``, every caller that
reports weights problems (the command lines, exit code 2) reports it too.
"""
from __future__ import annotations


class WeightsError(ValueError):
    """A weights, cache or sample file is missing, malformed, damaged or unreachable."""


class CacheFolderError(WeightsError):
    """The cache folder cannot be written (permissions, a file in the way, no space)."""
