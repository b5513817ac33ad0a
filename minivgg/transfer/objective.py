"""The objective of Gatys et al.: loss and gradient with respect to the image.

    L_total(x) = alpha * L_content(p, x, content_layer)
               + beta  * sum_l w_l E_l(a, x)
               + tv_weight * TV(x)                      (TV: not in the paper, 0 by default)

Shapes: x, content: (1, 3, H, W) network input (BGR, mean-subtracted);
each style image (1, 3, Hs, Ws), any size; targets per layer: P (1, C, h, w),
A (1, C, C). One evaluation is one forward pass to the deepest layer needed and
one backward pass down to the pixels.

``Objective.__call__`` is the reference evaluation, the losses in their
textbook form (``losses``). On a network built with ``engine="fast"`` each
evaluation goes to the fast engine's ``FastEvaluator``
(``minivgg.fast.objective``): the same numbers, with an array pool.
"""
from __future__ import annotations

from typing import NamedTuple

from losses import (content_loss_backward, content_loss_forward, gram_matrix, style_loss_backward,
                    style_loss_forward, tv_loss_backward, tv_loss_forward)
from minivgg.architecture import PAPER_CONTENT_LAYER, PAPER_STYLE_LAYERS, layer_index


class Evaluation(NamedTuple):
    """One evaluation: the loss parts as 0-d arrays and the gradient, shaped like x."""

    content_loss: object  # unweighted L_content
    style_loss: object    # sum_l w_l E_l, unweighted by beta
    tv_loss: object       # unweighted TV
    total_loss: object    # alpha * content + beta * style + tv_weight * tv
    grad: object          # (1, 3, H, W)


class Objective:
    """L_total with its targets computed once, at construction.

    net: a ``minivgg.VGG19``. content: (1, 3, H, W) or None (texture synthesis).
    styles: a sequence of (1, 3, Hs, Ws) style images (may be empty: content
    reconstruction); style_blend: their weights (default equal, summing to 1):
    the Gram target of a layer is the blend of the styles' Gram matrices.
    style_layer_weights: w_l, default 1 / len(style_layers) each.
    """

    def __init__(self, net, content=None, styles=(), *, alpha=1e-3, beta=1.0,
                 content_layer=PAPER_CONTENT_LAYER, style_layers=PAPER_STYLE_LAYERS,
                 style_layer_weights=None, style_blend=None, tv_weight=0.0):
        styles = list(styles)
        self.net = net
        self.alpha, self.beta, self.tv_weight = float(alpha), float(beta), float(tv_weight)
        self.content_layer = content_layer if content is not None else None
        self.style_layers = tuple(style_layers) if styles else ()
        if style_layer_weights is None:       # w_l = 1 / (number of style layers), none without styles
            style_layer_weights = [1.0 / len(self.style_layers)] * len(self.style_layers) if self.style_layers else []
        if styles and len(style_layer_weights) != len(self.style_layers):
            raise ValueError(f"{len(style_layer_weights)} style layer weights for "
                             f"{len(self.style_layers)} style layers")
        self.style_layer_weights = dict(zip(self.style_layers, map(float, style_layer_weights)))
        for name in self.style_layers + ((content_layer,) if content is not None else ()):
            layer_index(name)                                      # clear error for unknown names
        if content is None and not styles:
            raise ValueError("the objective needs a content image, style images, or both")
        self.taps = tuple(dict.fromkeys(self.style_layers + ((self.content_layer,) if content is not None else ())))

        self.content_target = None
        if content is not None:
            # [0]: the pass's cache (every activation) is never bound to a name, so it is
            # freed here, before the style passes run, rather than living beside them.
            feats = net.forward(content, taps=(self.content_layer,))[0]
            self.content_target = feats[self.content_layer].copy(order="K")  # P (1, C, h, w), memory as F
            del feats
        self.style_targets = {}
        if styles:
            if style_blend is None:
                style_blend = [1.0 / len(styles)] * len(styles)
            if len(style_blend) != len(styles):
                raise ValueError(f"{len(style_blend)} blend weights for {len(styles)} style images")
            for style, blend in zip(styles, style_blend):
                feats = net.forward(style, taps=self.style_layers)[0]
                for name in self.style_layers:
                    gram = gram_matrix(feats[name]) * feats[name].dtype.type(blend)  # (1, C, C)
                    self.style_targets[name] = self.style_targets.get(name, 0) + gram
                del feats

        self.fast = None if net.fast is None else net.fast.evaluator(self)   # the fast engine's pool

    def __call__(self, x) -> Evaluation:
        """Loss parts and dL_total/dx for x: (1, 3, H, W)."""
        if self.fast is not None:
            return Evaluation(*self.fast(x))
        feats, cache = self.net.forward(x, taps=self.taps)
        grads = {}
        content = style = tv = 0.0
        if self.content_target is not None:
            content, c_cache = content_loss_forward(feats[self.content_layer], self.content_target)
            grads[self.content_layer] = content_loss_backward(c_cache, self.alpha)
        for name in self.style_layers:
            w_l = self.style_layer_weights[name]
            e_l, s_cache = style_loss_forward(feats[name], self.style_targets[name])
            style = style + w_l * e_l
            g = style_loss_backward(s_cache, self.beta * w_l)
            grads[name] = g + grads[name] if name in grads else g   # conv4_2 may be both
        grad = self.net.backward(grads, cache)                     # (1, 3, H, W)
        if self.tv_weight:
            tv, tv_cache = tv_loss_forward(x)
            grad = grad + tv_loss_backward(tv_cache, self.tv_weight).astype(grad.dtype, copy=False)
        total = self.alpha * content + self.beta * style + self.tv_weight * tv
        return Evaluation(content, style, tv, total, grad)
