"""What every optimiser returns."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class OptimResult:
    """The best image found and how the run went.

    x: engine array (1, 3, H, W) with the lowest total loss evaluated;
    history: one dict per iteration (iteration, evaluations, total, content,
    style, seconds); stopped: why the run ended ("done", "interrupted",
    "time limit", "not finite", or scipy's message); optimizer_seconds: the
    optimiser's own time, the run's wall time minus the time inside the
    objective and the callbacks (None where an optimiser does not measure it).
    """

    x: object
    loss: float
    iterations: int
    evaluations: int
    stopped: str
    history: list = field(default_factory=list)
    optimizer_seconds: float | None = None
