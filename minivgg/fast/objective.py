"""The fast engine's evaluation of the objective: the reference's steps, transformed.

``minivgg.transfer.objective.Objective`` freezes its targets and weights into
one record (``minivgg.evaluation.ObjectiveTargets``) and, for a network built
with ``engine="fast"``, hands each evaluation to a ``FastEvaluator`` made from
that record. It computes the same ``Evaluation`` as the reference evaluation in
that class (``tests/test_fast_engine.py``, ``tests/test_fast_transforms.py``),
differently, as the network's ``Transforms`` say:

* ``array_pool``: an ``ArrayPool`` (``minivgg.fast.arrays``), owned here and
  passed to the network and the content loss: each evaluation reuses the
  previous one's activations and work buffers; ``recycle()`` after every
  evaluation, when nothing made from the pool is used any more (the gradient
  returned is plain memory);
* always: the losses' unmasked gradients (``minivgg.fast.losses``,
  ``minivgg.fast.guided``: the walk applies the ReLU masks);
* ``threads``: NumPy's BLAS on one thread for the whole evaluation, and the
  Gram matrices' positions and the style gradients' spans shared among the
  workers (``minivgg.fast.threads``);
* ``deferred``: each style gradient handed to the walk as a function, made only
  when the walk reaches its layer (``FastVGG19.backward``); a guided layer's
  regions share that one gradient array.

Measured gains: ``python -m minivgg.bench --sizes 256 512 --ablate``.
"""
from __future__ import annotations

from losses import tv_loss_backward, tv_loss_forward
from minivgg.evaluation import Evaluation, ObjectiveTargets, style_term
from minivgg.fast import guided as fast_guided
from minivgg.fast import losses as fast_losses
from minivgg.fast.arrays import ArrayPool


class FastEvaluator:
    """Evaluations of the objective with targets ``targets`` on the fast network ``net`` (a ``FastVGG19``).

    It holds the network, the record and its own pool, and nothing of the ``Objective``: an
    objective dropped frees its evaluator, targets and pool at once (no reference cycle).
    """

    def __init__(self, net, targets: ObjectiveTargets):
        self.net, self.targets = net, targets
        self.pool = ArrayPool() if net.transforms.array_pool else None

    def __call__(self, x) -> Evaluation:
        """The ``Evaluation`` at x (1, 3, H, W), as ``Objective``'s reference evaluation."""
        try:
            with self.net.workers() as workers:   # one BLAS thread from the forward to the gradient
                return self._evaluate(x, workers)
        finally:
            if self.pool is not None:
                self.pool.recycle()        # every pooled array of this evaluation is dead by now

    def _evaluate(self, x, workers: int = 1) -> Evaluation:
        t, net, pool = self.targets, self.net, self.pool
        feats, cache = net.forward(x.astype(net.dtype, copy=False), t.taps, pool=pool)
        grads = {}
        content = style = tv = 0.0
        for name, k_c in t.content_weights.items():
            c_l, c_cache = fast_losses.content_loss_forward(feats[name], t.content_targets[name])
            content = content + k_c * c_l
            grads[name] = fast_losses.content_loss_backward(c_cache, t.alpha * k_c, pool=pool)
        for name in t.style_layers:
            w_l = t.style_layer_weights[name]
            if t.statistic is not None:          # another style statistic: the reference's losses
                e_l, g = style_term(t, name, feats[name], t.beta * w_l)
                grads[name] = g + grads[name] if name in grads else g
            elif t.guides is None:
                e_l, s_cache = fast_losses.style_loss_forward(feats[name], t.style_targets[name],
                                                              workers=workers)
                grads[name] = self._style_gradient(fast_losses.style_loss_backward, s_cache,
                                                   t.beta * w_l, grads.get(name), workers)
            else:
                e_l, caches = _guided_style(feats[name], t.guides[name])
                if caches:
                    grads[name] = self._style_gradient(fast_guided.guided_style_loss_backward, caches,
                                                       t.beta * w_l, grads.get(name), workers)
            style = style + w_l * e_l
        grad = net.backward(grads, cache, pool=pool)                # (1, 3, H, W)
        if t.tv_weight:
            tv, tv_cache = tv_loss_forward(x)
            grad += tv_loss_backward(tv_cache, t.tv_weight).astype(grad.dtype, copy=False)
        total = t.alpha * content + t.beta * style + t.tv_weight * tv
        return Evaluation(content, style, tv, total, grad)

    def _style_gradient(self, backward, cache, scale: float, other=None, workers: int = 1):
        """beta w_l dE_l/dF_l = backward(cache, scale) (plus ``other``, the content gradient when
        the layer is also a content layer): with ``deferred`` a function ``make(into=None)`` the
        walk calls when it reaches the layer (a gradient the size of the layer's features exists
        only from then on; given ``into``, the walk's own gradient there, it adds to that in
        place instead, ``fast_losses.style_loss_backward``'s ``into``), else the array itself.
        ``workers``: threads sharing its spans (``threads``)."""
        def make(into=None):
            if into is not None and backward is fast_losses.style_loss_backward:
                g = backward(cache, scale, workers=workers, into=into)
            else:
                g = backward(cache, scale, workers=workers)            # (1, C, h, w), a fresh array
                if into is not None:
                    into += g
                    g = into
            if other is not None:
                g += other
            return g
        return make if self.net.transforms.deferred else make()


def _guided_style(f, regions):
    """(sum_r E_r, [cache per region]) over one layer's regions [(t, A_t)] (``minivgg.fast.guided``)."""
    e_l, caches = 0.0, []
    for t, target in regions:
        e_r, cache = fast_guided.guided_style_loss_forward(f, t, target)
        e_l = e_l + e_r
        caches.append(cache)
    return e_l, caches
