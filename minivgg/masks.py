"""Region masks taken down to every layer's resolution, the way the network takes the image down.

Shape legend: mask (H, W), the image's region weights in [0, 1] (1 inside, 0 outside, soft
edges allowed); at layer l, t_l (h_l, w_l) with conv{b}_*: H / 2^(b-1) and pool{b}: H / 2^b,
every "/" a floor (``minivgg.architecture``), so t_l has the shape of that layer's feature maps.

The rule: **through the network's own pooling**. A convolution (3x3, stride 1, padding 1)
keeps the grid, so it leaves the mask as it is; each 2x2 pooling (stride 2, the last odd row or
column dropped) averages it, with the reference engine's ``avg_pool2d_forward`` itself. Position
(i, j) of a layer after k poolings is the 2^k x 2^k block of pixels at (2^k i, 2^k j), and t_l
there is the mask's mean over that block. The same rule holds on a max-pooling network: a mask
weights positions, it is not a feature to be maxed.

Why this rule rather than the receptive-field variants of Gatys et al.'s code (a position is in
the region if its receptive field lies *inside* it, or if it sees *any* of it):

* the receptive field of conv5_1 is 156 pixels wide: on a 256-pixel image split into two
  halves, the "inside" rule keeps of each half at conv5_1 only the positions more than 78
  pixels from the split (about 40% of it), and the "any" rule makes each half reach 78 pixels
  into the other, so both styles are matched on a 156-pixel band across the middle;
* averaging is linear: masks that add up to 1 at every pixel (a partition, hard or soft) add up
  to 1 at every position of every layer, so every position gets the same total style weight;
  an edge stays where it is in the image (a block that straddles it gets the fraction of it
  inside), and a soft edge keeps its width in pixels;
* it needs no probing of the network with random images and no threshold, and the grid with its
  floors is the network's own (one function, ``avg_pool2d_forward``), so shapes always match.
"""
from __future__ import annotations

from minivgg.architecture import LAYER_NAMES, layer_index
from minivgg.pool import avg_pool2d_forward


def layer_masks(mask, layers) -> dict:
    """{layer: t_l (h_l, w_l)} for ``mask`` (H, W): unchanged through convs, 2x2 mean at each pool.

    mask: a NumPy or CuPy array; the results are on its device, in its dtype.
    """
    if mask.ndim != 2:
        raise ValueError(f"a mask is one (H, W) channel, got shape {tuple(mask.shape)}")
    layers = tuple(layers)
    depth = max(layer_index(name) for name in layers) + 1
    t = mask[None, None]                                           # (1, 1, H, W)
    found = {}
    for name in LAYER_NAMES[:depth]:
        if name.startswith("pool"):
            t = avg_pool2d_forward(t, 2, 2)[0]                     # (1, 1, h / 2, w / 2)
        if name in layers:
            found[name] = t[0, 0]                                  # (h_l, w_l)
    return found
