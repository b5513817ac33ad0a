"""Progress lines with seconds per iteration and an ETA."""
from __future__ import annotations

import sys
import time


def format_seconds(seconds: float) -> str:
    """62.3 -> '1m02s'; 3725 -> '1h02m05s'."""
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """Reports iteration k of n: evaluations, loss parts, seconds per iteration, ETA.

    Call ``update(iteration, evaluations, total, content, style)`` once per
    iteration; a line is written every ``every`` iterations and at the last one.
    ``history`` keeps every update (for loss curves). ``prefix`` starts every
    line (a stage of a coarse-to-fine run); ``after``: work still to come once
    these iterations are done, in iterations of this run's cost (the ETA counts it).
    """

    def __init__(self, total_iterations: int, every: int = 0, stream=sys.stderr, quiet=False,
                 prefix: str = "", after: float = 0.0):
        self.n = int(total_iterations)
        self.prefix = prefix
        self.after = float(after)
        self.every = every or max(1, self.n // 20)
        self.stream = stream
        self.quiet = quiet
        self.start = time.monotonic()
        self.history = []

    def update(self, iteration, evaluations, total, content, style):
        elapsed = time.monotonic() - self.start
        per_iter = elapsed / max(iteration, 1)
        self.history.append(dict(iteration=iteration, evaluations=evaluations, total=total,
                                 content=content, style=style, seconds=elapsed))
        if self.quiet or not (iteration % self.every == 0 or iteration >= self.n or iteration == 1):
            return
        eta = format_seconds(per_iter * (max(self.n - iteration, 0) + self.after))
        print(f"{self.prefix}iter {iteration:>4}/{self.n}  evals {evaluations:>4}  loss {total:.4e} "
              f"(content {content:.3e}, style {style:.3e})  {per_iter:.2f} s/it  ETA {eta}",
              file=self.stream, flush=True)
