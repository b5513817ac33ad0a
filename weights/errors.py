"""The one exception the ``weights`` package raises for anything it cannot use.

Every malformed, damaged, unexpected or unreachable input (a truncated
download, a flipped byte in a cache file, a pickle that names a forbidden
global, a missing layer, pip without network) ends up as ``WeightsError``
with a message that says what was expected and what was found. It subclasses
``ValueError`` so callers that already catch bad-value errors keep working.
"""
from __future__ import annotations


class WeightsError(ValueError):
    """A weights, cache or sample file is missing, malformed, damaged or unreachable."""
