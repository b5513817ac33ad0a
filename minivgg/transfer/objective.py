"""The objective of Gatys et al.: loss and gradient with respect to the image.

    L_total(x) = alpha * sum_c k_c L_content(p, x, c)      (content layers c, weights k_c; one, k = 1, by default)
               + beta  * sum_l w_l E_l(a, x)
               + tv_weight * TV(x)                        (TV: not in the paper, 0 by default)

Shapes: x, content: (1, 3, H, W) network input (BGR, mean-subtracted);
each style image (1, 3, Hs, Ws), any size; targets per layer: P (1, C, h, w),
A (1, C, C). One evaluation is one forward pass to the deepest layer needed and
one backward pass down to the pixels.

A is the style image's own Gram matrix, a sum over its positions: the paper
resizes the style image to the content's size first, so that it sums over as
many positions as G. A style image left at another size (``--style-size``) says
so with ``image_hw``, x's (H, W): each style's Gram is then scaled to x's number
of positions at that layer, A_k M_l(x) / M_l(a_k) (a factor of 1 at equal sizes).

Spatial control (Gatys et al. 2017): with ``content_masks`` (one (H, W) mask per
style image, over x), E_l is the sum over regions of the guided style loss
(``losses.guided``): region k of x matches style k's guided Gram, taken under
its ``style_masks`` entry (the whole style image without one). Guided Grams are
means over their region's positions, so style images of any size need no
scaling there. The masks are taken down to each layer once, here (``minivgg.masks``).

Other style statistics (``style_loss``, ``losses.statistics``: mean and standard
deviation, MMD with three kernels, sliced Wasserstein) replace the Gram term E_l
with that statistic's loss at each style layer; several style images add their
losses, weighted by ``style_blend``. They run on the fast engine's features
too, with the reference losses (``minivgg.evaluation.style_term``).

The targets and weights are computed once and frozen into one record,
``Objective.targets`` (``minivgg.evaluation.ObjectiveTargets``), which is all an
evaluation reads. ``Objective.__call__`` is the reference evaluation, the losses
in their textbook form (``losses``). On a network built with ``engine="fast"``
each evaluation goes to the fast engine's ``FastEvaluator``
(``minivgg.fast.objective``), made from the same record: the same numbers, with
the engine's transformations. Both return an ``Evaluation``.
"""
from __future__ import annotations

from losses import (content_loss_backward, content_loss_forward, gram_matrix, guided_gram,
                    guided_style_loss_backward, guided_style_loss_forward, style_loss_backward,
                    style_loss_forward, tv_loss_backward, tv_loss_forward)
from losses.statistics import style_statistic
from minivgg.architecture import PAPER_CONTENT_LAYER, PAPER_STYLE_LAYERS, layer_index, layer_outputs
from minivgg.backend import get_array_module, to_device
from minivgg.evaluation import Evaluation, ObjectiveTargets, style_term
from minivgg.masks import layer_masks

__all__ = ["Evaluation", "Objective", "positions"]


def positions(hw, name: str) -> int:
    """M_l = h * w of layer ``name``'s feature maps for an image of size hw = (H, W)."""
    *_, h, w = layer_outputs(hw[0], hw[1], name)[-1]
    return h * w


class Objective:
    """L_total with its targets computed once, at construction.

    net: a ``minivgg.VGG19``. content: (1, 3, H, W) or None (texture synthesis).
    styles: a sequence of (1, 3, Hs, Ws) style images (may be empty: content
    reconstruction); style_blend: their weights (default equal, summing to 1):
    the Gram target of a layer is the blend of the styles' Gram matrices.
    style_layer_weights: w_l, default 1 / len(style_layers) each.
    content_layers: {layer: k_c} to match several content layers (replaces
    content_layer, which is the same as {content_layer: 1}).
    content_masks: one (H, W) array in [0, 1] per style image, over x (spatial
    control; then no style_blend); style_masks: one (Hs, Ws) array or None per
    style image, the part of it to learn from. image_hw: x's (H, W), to scale
    each style's Gram to x's number of positions (module docstring); None: the
    paper's raw A, and masks over an x of the content's (else the first style's) size.
    style_loss: the style statistic by name (``losses.statistics``), "gram" the paper's.
    """

    def __init__(self, net, content=None, styles=(), *, alpha=1e-3, beta=1.0,
                 content_layer=PAPER_CONTENT_LAYER, style_layers=PAPER_STYLE_LAYERS,
                 style_layer_weights=None, style_blend=None, tv_weight=0.0, content_layers=None,
                 content_masks=None, style_masks=None, image_hw=None, style_loss="gram"):
        styles = list(styles)
        self.style_loss = style_loss
        statistic = None if style_loss == "gram" else style_statistic(style_loss)
        self.net = net
        # k_c per content layer, in order; the first is ``content_layer`` (the run's summary, notebooks)
        content_weights = {} if content is None else {
            name: float(k) for name, k in (content_layers or {content_layer: 1.0}).items()}
        self.content_layer = next(iter(content_weights), None)
        style_layers = tuple(style_layers) if styles else ()
        if style_layer_weights is None:       # w_l = 1 / (number of style layers), none without styles
            style_layer_weights = [1.0 / len(style_layers)] * len(style_layers) if style_layers else []
        if styles and len(style_layer_weights) != len(style_layers):
            raise ValueError(f"{len(style_layer_weights)} style layer weights for "
                             f"{len(style_layers)} style layers")
        for name in style_layers + tuple(content_weights):
            layer_index(name)                                      # clear error for unknown names
        if content is None and not styles:
            raise ValueError("the objective needs a content image, style images, or both")

        content_targets = {} if content is None else self._content_targets(content, tuple(content_weights))
        self.content_target = content_targets.get(self.content_layer)   # P of the first content layer
        self.image_hw = None if image_hw is None else tuple(image_hw)
        style_targets, guides, statistic_targets = {}, None, {}
        if (content_masks is not None or style_masks is not None) and statistic is not None:
            raise ValueError(f"spatial control uses guided Gram matrices: not with the {style_loss!r} style loss")
        if content_masks is not None or style_masks is not None:
            guides = self._guided_targets(content, styles, style_layers, content_masks, style_masks,
                                          style_blend)
        elif styles:
            style_targets, statistic_targets = self._style_targets(styles, style_layers, statistic,
                                                                   style_blend)
        self.targets = ObjectiveTargets(
            taps=tuple(dict.fromkeys(style_layers + tuple(content_weights))),
            content_weights=content_weights, content_targets=content_targets,
            style_layers=style_layers, style_layer_weights=dict(zip(style_layers, map(float, style_layer_weights))),
            style_targets=style_targets, guides=guides, statistic=statistic,
            statistic_targets=statistic_targets, alpha=float(alpha), beta=float(beta), tv_weight=float(tv_weight))
        self.fast = None if net.fast is None else net.fast.evaluator(self.targets)   # the fast evaluation

    def __getattr__(self, name):
        """The record's fields read as the objective's own (``objective.alpha``, ``objective.style_targets``)."""
        targets = self.__dict__.get("targets")
        if targets is not None and name in ObjectiveTargets.__dataclass_fields__:
            return getattr(targets, name)
        raise AttributeError(f"'Objective' object has no attribute {name!r}")

    def _content_targets(self, content, layers: tuple) -> dict:
        """{layer: P (1, C, h, w)}: the content image's features, copied in their memory order."""
        # [0]: the pass's cache (every activation) is never bound to a name, so it is
        # freed here, before the style passes run, rather than living beside them.
        feats = self.net.forward(content, taps=layers)[0]
        return {name: feats[name].copy(order="K") for name in feats}

    def _style_targets(self, styles, style_layers, statistic, style_blend) -> tuple:
        """({layer: A}, {}) with A the blend of the styles' Gram matrices (the paper's), or ({},
        {layer: [(blend, target) per style image]}) of another statistic; blends from style_blend
        (default equal)."""
        blends = [1.0 / len(styles)] * len(styles) if style_blend is None else list(style_blend)
        if len(blends) != len(styles):
            raise ValueError(f"{len(blends)} blend weights for {len(styles)} style images")
        grams, statistic_targets = {}, {}
        for style, blend in zip(styles, blends):
            feats = self.net.forward(style, taps=style_layers)[0]
            for name in style_layers:
                if statistic is not None:
                    target = statistic.target(feats[name].copy(order="C"))
                    statistic_targets.setdefault(name, []).append((float(blend), target))
                else:
                    scale = blend * self._size_ratio(style, name)
                    gram = gram_matrix(feats[name]) * feats[name].dtype.type(scale)  # (1, C, C)
                    grams[name] = grams.get(name, 0) + gram
            del feats
        return grams, statistic_targets

    def _size_ratio(self, style, name: str) -> float:
        """M_l(x) / M_l(style) when ``image_hw`` is given; else 1 (the paper's raw A)."""
        if self.image_hw is None:
            return 1.0
        return positions(self.image_hw, name) / positions(style.shape[2:], name)

    def _guided_targets(self, content, styles, style_layers, content_masks, style_masks, style_blend) -> dict:
        """{layer: [(t, A_t)]}: per style k, content mask k at the layer and style k's guided Gram
        under its style mask (``losses.guided``). A region that vanishes at a layer (all zero
        there: a mask living in a row the pooling drops) is left out of that layer."""
        if content_masks is None or style_blend is not None:
            raise ValueError("style masks need content masks, and content masks replace style_blend "
                             "(each style has its own region)")
        style_masks = [None] * len(styles) if style_masks is None else list(style_masks)
        if not len(content_masks) == len(style_masks) == len(styles):
            raise ValueError(f"{len(content_masks)} content masks and {len(style_masks)} style masks "
                             f"for {len(styles)} style images: give one per style image")
        x_hw = tuple(self.image_hw or (content if content is not None else styles[0]).shape[2:])
        guides = {name: [] for name in style_layers}
        for k, (style, mask, s_mask) in enumerate(zip(styles, content_masks, style_masks), 1):
            s_mask = get_array_module(style).ones(style.shape[2:]) if s_mask is None else s_mask
            ts = self._layer_masks(mask, x_hw, style_layers, f"content mask {k}")
            ss = self._layer_masks(s_mask, tuple(style.shape[2:]), style_layers, f"style mask {k}")
            feats = self.net.forward(style, taps=style_layers)[0]
            for name in style_layers:
                xp = get_array_module(ss[name])
                if not float(xp.sum(ss[name])) > 0:
                    raise ValueError(f"style mask {k} covers nothing at {name}")
                if float(xp.sum(ts[name])) > 0:
                    guides[name].append((ts[name], guided_gram(feats[name], ss[name])))  # t, A_t (1, C, C)
            del feats
        return guides

    def _layer_masks(self, mask, hw, style_layers, what) -> dict:
        """mask (H, W) -> {style layer: t_l} on the network's device, in its dtype."""
        if tuple(mask.shape) != hw:
            raise ValueError(f"{what} has shape {tuple(mask.shape)}, its image {hw}")
        if not float(get_array_module(mask).min(mask)) >= 0:
            raise ValueError(f"{what} has negative values")
        return layer_masks(to_device(mask, self.net.device).astype(self.net.dtype), style_layers)

    def __call__(self, x) -> Evaluation:
        """Loss parts and dL_total/dx for x: (1, 3, H, W)."""
        if self.fast is not None:
            return self.fast(x)
        t = self.targets
        feats, cache = self.net.forward(x, taps=t.taps)
        grads = {}
        content = style = tv = 0.0
        for name, k_c in t.content_weights.items():
            c_l, c_cache = content_loss_forward(feats[name], t.content_targets[name])
            content = content + k_c * c_l
            grads[name] = content_loss_backward(c_cache, t.alpha * k_c)
        for name in t.style_layers:
            w_l = t.style_layer_weights[name]
            if t.statistic is not None:
                e_l, g = style_term(t, name, feats[name], t.beta * w_l)
            elif t.guides is None:
                e_l, s_cache = style_loss_forward(feats[name], t.style_targets[name])
                g = style_loss_backward(s_cache, t.beta * w_l)
            else:
                e_l, g = self._guided_style(feats[name], t.guides[name], t.beta * w_l)
            style = style + w_l * e_l
            grads[name] = g + grads[name] if name in grads else g   # conv4_2 may be both
        grad = self.net.backward(grads, cache)                     # (1, 3, H, W)
        if t.tv_weight:
            tv, tv_cache = tv_loss_forward(x)
            grad = grad + tv_loss_backward(tv_cache, t.tv_weight).astype(grad.dtype, copy=False)
        total = t.alpha * content + t.beta * style + t.tv_weight * tv
        return Evaluation(content, style, tv, total, grad)

    @staticmethod
    def _guided_style(f, regions, dloss):
        """(sum_r E_r, dloss * its gradient) over one layer's regions [(t, A_t)]; 0 and zeros without any."""
        e_l, g = 0.0, get_array_module(f).zeros_like(f)
        for t, target in regions:
            e_r, cache = guided_style_loss_forward(f, t, target)
            e_l = e_l + e_r
            g += guided_style_loss_backward(cache, dloss)
        return e_l, g
