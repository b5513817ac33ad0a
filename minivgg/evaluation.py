"""What one evaluation of the objective reads and returns: its targets as one record, and the result.

``minivgg.transfer.objective.Objective`` computes the targets once and freezes
them into an ``ObjectiveTargets``; both evaluations read that record and
nothing else of the objective (no back-reference): the reference evaluation
(``Objective.__call__``) and the fast engine's (``minivgg.fast.objective.FastEvaluator``).
Both return an ``Evaluation``.

Shapes: P (1, C, h, w) per content layer; A (1, C, C) per style layer; a
guided layer's regions [(t (h, w), A_t (1, C, C))]; another statistic's
targets per style image [(blend, target)] (``losses.statistics``).
"""
from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Mapping, NamedTuple


class Evaluation(NamedTuple):
    """One evaluation: the loss parts as 0-d arrays and the gradient, shaped like x."""

    content_loss: object  # sum_c k_c L_content(c), unweighted by alpha
    style_loss: object    # sum_l w_l E_l, unweighted by beta
    tv_loss: object       # unweighted TV
    total_loss: object    # alpha * content + beta * style + tv_weight * tv
    grad: object          # (1, 3, H, W)


@dataclasses.dataclass(frozen=True)
class ObjectiveTargets:
    """The objective's weights and targets, fixed at construction; mappings are read-only views.

    Exactly one kind of style target is filled for the style layers: ``style_targets`` (the
    paper's Gram matrices), ``guides`` (spatial control) or ``statistic_targets`` (another
    statistic, then ``statistic`` is it).
    """

    taps: tuple                         # the layers a forward pass must return
    content_weights: Mapping            # {content layer: k_c}
    content_targets: Mapping            # {content layer: P}
    style_layers: tuple
    style_layer_weights: Mapping        # {style layer: w_l}
    style_targets: Mapping              # {style layer: A}
    guides: Mapping | None              # {style layer: ((t, A_t) per region)}, or None
    statistic: object | None            # a losses.statistics.StyleStatistic, None for the Gram loss
    statistic_targets: Mapping          # {style layer: ((blend, target) per style image)}
    alpha: float
    beta: float
    tv_weight: float

    def __post_init__(self):
        for field in ("content_weights", "content_targets", "style_layer_weights", "style_targets"):
            object.__setattr__(self, field, MappingProxyType(dict(getattr(self, field))))
        for field in ("guides", "statistic_targets"):          # {layer: a list} -> {layer: a tuple}
            if getattr(self, field) is not None:
                object.__setattr__(self, field, MappingProxyType(
                    {name: tuple(items) for name, items in getattr(self, field).items()}))


def style_term(targets: ObjectiveTargets, name: str, f, dloss):
    """(E_l, dloss * dE_l/dF) at layer ``name`` for a statistic other than the Gram matrix:
    sum_k b_k E(f, target_k) over the style images k (``losses.statistics``). Both engines
    call it, on their own features (the fast engine's may be channels-last views)."""
    e_l, g = 0.0, None
    for blend, target in targets.statistic_targets[name]:
        e_k, cache = targets.statistic.forward(f, target)
        g_k = targets.statistic.backward(cache, dloss * blend)
        e_l = e_l + blend * e_k
        g = g_k if g is None else g + g_k
    return e_l, g
