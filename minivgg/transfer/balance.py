"""One look at every size: the content and TV terms weighed by the size the ratio was stated at.

Why. The paper's content loss 1/2 sum (F - P)^2 sums over the M_l positions of its
layer, so it grows with the pixel count; the style loss E_l divides by M_l^2 and
does not grow (``docs/derivations.md`` §5, Eq. 5.1). A fixed alpha/beta therefore
weighs content (eta^2) times more at eta times the side: the paper's 1e-3, about
right at its ~512 px images, gives a photo with strokes at 1024 px.

What. ``--ratio`` (and ``--alpha``/``--beta``) are stated at a reference size, the
long side ``ratio_size`` (default 512 px, the paper's images). At a stage of
another size each content layer c's weight k_c is multiplied by

    s_c = M_c(reference) / M_c(stage)

(M_c: positions of layer c's maps; the reference image has the stage's aspect
ratio and ``ratio_size`` on its long side), and the TV weight, a sum over pixels,
by the pixel-count ratio. The style terms are untouched. So at the reference size
the objective *is* the paper's (s_c = 1 exactly), and at every other size each
term has the weight it would have there. ``ratio_size=None`` keeps the paper's
objective unchanged at every size (``--ratio-size paper``). Transfer mode only: a
content reconstruction or a texture has one term, and no balance to keep.

Why the content term and not both. Normalising both terms by their element counts
(as several ports do) also removes the dependence, but changes what every ratio in
the paper means; scaling one term by a position count keeps the paper's values
meaningful at the paper's size, and the oracle-tested ``Objective`` unchanged
(this module only chooses its weights).
"""
from __future__ import annotations

from minivgg.architecture import PAPER_CONTENT_LAYER, PAPER_STYLE_LAYERS
from minivgg.image import fit_long_side
from minivgg.transfer.objective import positions


def reference_hw(hw, ratio_size: int) -> tuple:
    """(H, W) of an image of hw's aspect ratio with long side ``ratio_size`` (the image the ratio is stated at)."""
    return fit_long_side(hw[0], hw[1], ratio_size)


def content_scale(hw, layer: str, ratio_size) -> float:
    """s_c = M_c(reference) / M_c(hw): how much more layer c's content loss weighs at hw (1 with ratio_size None)."""
    if ratio_size is None:
        return 1.0
    return positions(reference_hw(hw, ratio_size), layer) / positions(hw, layer)


def stage_weights(objective, hw) -> tuple:
    """({content layer: k_c * s_c}, tv_weight * pixel ratio) for a stage of size hw, from
    ``ObjectiveSettings`` (its content_layers, tv_weight and ratio_size)."""
    size = objective.ratio_size if objective.mode == "transfer" else None
    weights = {name: k * content_scale(hw, name, size) for name, k in objective.content_layers}
    tv = objective.tv_weight
    if size is not None and tv:
        ref = reference_hw(hw, size)
        tv *= (ref[0] * ref[1]) / (hw[0] * hw[1])
    return weights, tv


def unscaled(objective, stage_hws) -> bool:
    """Whether no stage rescales a term: the weights are used as given, as in the paper's objective."""
    return objective.ratio_size is None or all(
        content_scale(hw, name, objective.ratio_size) == 1.0
        for hw in stage_hws for name, _ in objective.content_layers)


def papers_terms(objective) -> bool:
    """Whether the terms are the paper's: conv4_2 for content, Gram matrices on its five style layers
    at 1/5, no TV."""
    return (objective.mode == "transfer" and objective.content_layers == ((PAPER_CONTENT_LAYER, 1.0),)
            and objective.style_loss == "gram"
            and tuple(objective.style_layers) == PAPER_STYLE_LAYERS
            and objective.style_layer_weights is None and not objective.tv_weight)


def balance_label(objective, stage_hws) -> str:
    """How the summary line states the weights' balance: where it holds, what was rescaled, and
    whether the run minimises the paper's objective as written ('' outside transfer mode)."""
    if objective.mode != "transfer":
        return ""
    paper = "; the paper's objective" if papers_terms(objective) else ""
    if objective.ratio_size is None:
        return f"unscaled at every size{paper}"
    where = f"as stated at {objective.ratio_size} px"
    if unscaled(objective, stage_hws):
        return f"{where}{paper}"
    first = objective.content_layers[0][0]
    scales = ", ".join(f"x{content_scale(hw, first, objective.ratio_size):.3g} at {hw[1]}x{hw[0]}"
                       for hw in stage_hws)
    return f"{where}: content weighed {scales} to keep that balance"
