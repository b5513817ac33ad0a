"""Gatys et al.'s style transfer: the objective and the one-call ``evaluate``.

    from minivgg.transfer import evaluate
    content_loss, style_loss, total_loss, grad = evaluate(
        x, content, style, alpha=1e-3, beta=1.0, content_layer="conv4_2",
        style_layers=("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"),
        style_layer_weights=None, pooling="avg", dtype="float64", engine="fast")

x, content: (1, 3, H, W), style: (1, 3, Hs, Ws), all preprocessed (BGR,
mean-subtracted, 0..255 scale; ``minivgg.image.rgb_to_net``). The command line
is ``python -m minivgg.transfer`` (``minivgg/transfer/cli.py``).

engine: "fast" (default) or "reference": which of ``minivgg.VGG19``'s engines
runs the network and the losses; the numbers agree to float64 rounding.

``evaluate`` builds the real network once per setting and keeps it (``network``, up
to four settings, about 80 MB of float32 weights each, more in float64);
``release_networks()`` lets them go, e.g. at the end of a notebook.
"""
from __future__ import annotations

import functools

from minivgg.architecture import PAPER_CONTENT_LAYER, PAPER_STYLE_LAYERS
from minivgg.backend import device_of
from minivgg.transfer.objective import Evaluation, Objective
from minivgg.vgg import VGG19

__all__ = ["evaluate", "Objective", "Evaluation", "PAPER_STYLE_LAYERS", "network", "release_networks"]


@functools.lru_cache(maxsize=4)
def network(pooling="avg", dtype="float32", device="cpu", normalized=False, engine="fast") -> VGG19:
    """The real VGG-19 (weights fetched and cached on first use), built once per setting."""
    import weights
    return VGG19(weights.load_vgg19(normalized=normalized), pooling=pooling, dtype=dtype,
                 device=device, engine=engine)


def release_networks() -> None:
    """Forget every network ``network`` keeps, so that their weights can be freed."""
    network.cache_clear()


def evaluate(x, content, style, alpha=1e-3, beta=1.0, content_layer=PAPER_CONTENT_LAYER,
             style_layers=PAPER_STYLE_LAYERS, style_layer_weights=None, pooling="avg",
             dtype="float64", normalized=False, tv_weight=0.0, engine="fast", style_loss="gram"):
    """(content_loss, style_loss, total_loss, grad) of L_total at x, targets computed afresh.

    content_loss = 1/2 sum (F - P)^2 at content_layer (unweighted); style_loss =
    sum_l w_l E_l (unweighted by beta); total_loss = alpha * content_loss +
    beta * style_loss (+ tv_weight * TV); grad = dL_total/dx, shaped like x, in
    ``dtype`` on x's device. ``style`` may be one image or a list of images
    (their Gram matrices blended equally). style_loss: the style statistic
    (``losses.statistics``; "gram", the paper's). Losses are Python floats.
    """
    net = network(pooling, str(dtype), device_of(x), normalized, engine)
    styles = style if isinstance(style, (list, tuple)) else [style]
    objective = Objective(net, content, styles, alpha=alpha, beta=beta,
                          content_layer=content_layer, style_layers=style_layers,
                          style_layer_weights=style_layer_weights, tv_weight=tv_weight, style_loss=style_loss)
    ev = objective(x.astype(net.dtype, copy=False))
    return float(ev.content_loss), float(ev.style_loss), float(ev.total_loss), ev.grad
