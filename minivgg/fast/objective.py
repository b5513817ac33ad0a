"""The fast engine's evaluation of the objective: the reference's steps, with an array pool.

``minivgg.transfer.objective.Objective`` holds the targets (and, for spatial
control, the masks already at every layer) and, for a network built with
``engine="fast"``, hands each evaluation to a ``FastEvaluator``. It computes
the same L_total and gradient as the reference evaluation in that class
(``tests/test_fast_engine.py``), differently:

* an ``ArrayPool`` (``minivgg.fast.arrays``), owned here and passed to the
  network and the losses: each evaluation reuses the previous one's
  activations and work buffers (at 512 x 512: ~11,000 page faults and 0.2 s
  of system time less per evaluation); ``recycle()`` after every evaluation,
  when nothing made from the pool is used any more (the gradient returned is
  plain memory);
* the losses' unmasked gradients (``minivgg.fast.losses``, ``minivgg.fast.guided``:
  the walk's ReLU masks);
* each style gradient handed to the walk as a function, made only when the
  walk reaches its layer (``FastVGG19.backward``); a guided layer's regions
  share that one gradient array.
"""
from __future__ import annotations

import weakref

from losses import tv_loss_backward, tv_loss_forward
from minivgg.fast import guided as fast_guided
from minivgg.fast import losses as fast_losses
from minivgg.fast.arrays import ArrayPool


class FastEvaluator:
    """Evaluations of ``objective`` (an ``Objective`` on a fast ``VGG19``) with the engine's own pool.

    The objective owns its evaluator and the evaluator only looks the objective up (a weak
    reference): without that cycle, ``del objective`` frees the targets and the pool at once, not
    at the garbage collector's next pass (a coarse-to-fine run builds one objective per stage).
    """

    def __init__(self, objective):
        self._objective = weakref.ref(objective)
        self.pool = ArrayPool()

    @property
    def objective(self):
        objective = self._objective()
        if objective is None:
            raise RuntimeError("this FastEvaluator's Objective no longer exists")
        return objective

    def __call__(self, x) -> tuple:
        """(content, style, tv, total, grad) at x (1, 3, H, W), as ``Objective``'s reference evaluation."""
        try:
            return self._evaluate(x)
        finally:
            self.pool.recycle()            # every pooled array of this evaluation is dead by now

    def _evaluate(self, x) -> tuple:
        o, pool = self.objective, self.pool
        net = o.net.fast
        feats, cache = net.forward(x.astype(o.net.dtype, copy=False), o.taps, pool=pool)
        grads = {}
        content = style = tv = 0.0
        for name, k_c in o.content_weights.items():
            c_l, c_cache = fast_losses.content_loss_forward(feats[name], o.content_targets[name], pool=pool)
            content = content + k_c * c_l
            grads[name] = fast_losses.content_loss_backward(c_cache, o.alpha * k_c, pool=pool)
        for name in o.style_layers:
            w_l = o.style_layer_weights[name]
            if o.statistic is not None:          # another style statistic: the reference's losses
                e_l, g = o.style_term(name, feats[name], o.beta * w_l)
                grads[name] = g + grads[name] if name in grads else g
            elif o.guides is None:
                e_l, s_cache = fast_losses.style_loss_forward(feats[name], o.style_targets[name])
                grads[name] = _style_gradient(fast_losses.style_loss_backward, s_cache, o.beta * w_l,
                                              grads.get(name))
            else:
                e_l, caches = _guided_style(feats[name], o.guides[name])
                if caches:
                    grads[name] = _style_gradient(fast_guided.guided_style_loss_backward, caches,
                                                  o.beta * w_l, grads.get(name))
            style = style + w_l * e_l
        grad = net.backward(grads, cache, pool=pool)                # (1, 3, H, W)
        if o.tv_weight:
            tv, tv_cache = tv_loss_forward(x)
            grad += tv_loss_backward(tv_cache, o.tv_weight).astype(grad.dtype, copy=False)
        total = o.alpha * content + o.beta * style + o.tv_weight * tv
        return content, style, tv, total, grad


def _guided_style(f, regions):
    """(sum_r E_r, [cache per region]) over one layer's regions [(t, A_t)] (``minivgg.fast.guided``)."""
    e_l, caches = 0.0, []
    for t, target in regions:
        e_r, cache = fast_guided.guided_style_loss_forward(f, t, target)
        e_l = e_l + e_r
        caches.append(cache)
    return e_l, caches


def _style_gradient(backward, cache, scale: float, other=None):
    """beta w_l dE_l/dF_l = backward(cache, scale) (plus ``other``, the content gradient when the
    layer is also a content layer), as a function the walk calls when it reaches the layer: a
    gradient the size of the layer's features exists only from then on."""
    def make():
        g = backward(cache, scale)                                 # (1, C, h, w), a fresh array
        if other is not None:
            g += other
        return g
    return make
