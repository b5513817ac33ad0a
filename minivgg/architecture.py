"""VGG-19 as the paper uses it: the layer table, the input convention, the paper's layer choices.

Both engines (``minivgg.vgg`` the reference, ``minivgg.fast`` the fast one), the
weights loader, the memory model and the command line read the network's
shape from here, and nowhere else.

Shape legend
    N batch, H, W image size; layer ``conv{b}_{k}`` / ``pool{b}`` of block b:
    conv{b}_*: (N, C_b, H / 2^(b-1), W / 2^(b-1))   pool{b}: (N, C_b, H / 2^b, W / 2^b)
    with C = 64, 128, 256, 512, 512 for blocks 1..5 and every "/" a floor.

Every conv is 3x3, stride 1, padding 1, and is followed by ReLU; "conv4_2"
names the rectified output. Every pool is 2x2 with stride 2.
"""
from __future__ import annotations

from minivgg.pool import pool_output_size

# The 21 layers in order: (name, input channels, output channels); pools keep channels.
LAYERS = (
    ("conv1_1", 3, 64), ("conv1_2", 64, 64), ("pool1", 64, 64),
    ("conv2_1", 64, 128), ("conv2_2", 128, 128), ("pool2", 128, 128),
    ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), ("conv3_4", 256, 256),
    ("pool3", 256, 256),
    ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512), ("conv4_4", 512, 512),
    ("pool4", 512, 512),
    ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512), ("conv5_4", 512, 512),
    ("pool5", 512, 512),
)
LAYER_NAMES = tuple(name for name, _, _ in LAYERS)
CONV_NAMES = tuple(name for name in LAYER_NAMES if name.startswith("conv"))
CONV_SHAPES = {name: (cout, cin, 3, 3) for name, cin, cout in LAYERS if name.startswith("conv")}

# The input convention of the Caffe VGG-19 (the network was trained on images prepared this way):
# BGR channel order, the 0..255 scale, and the mean colour of the ImageNet training set subtracted
# (minivgg.network_input turns images into such inputs and back).
MEAN_BGR = (103.939, 116.779, 123.68)

# The paper's choices (docs/derivations.md, section 1): content at conv4_2, style on the first conv of every block.
PAPER_CONTENT_LAYER = "conv4_2"
PAPER_STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


def layer_index(name: str) -> int:
    """Position of ``name`` in ``LAYER_NAMES``; a clear error for unknown names."""
    try:
        return LAYER_NAMES.index(name)
    except ValueError:
        raise ValueError(f"unknown VGG-19 layer {name!r}; layers are {', '.join(LAYER_NAMES)}") from None


def min_input_size(name: str) -> int:
    """Smallest height/width an input may have so that layer ``name`` is not empty.

    Each pool before (and including) the layer halves the size with floor, so a
    layer after k pools needs 2^k pixels.
    """
    pools = sum(1 for n in LAYER_NAMES[:layer_index(name) + 1] if n.startswith("pool"))
    return 2 ** pools


def tap_depth(shape, taps) -> int:
    """How many layers a forward pass to the deepest of ``taps`` runs; refuses a bad input shape.

    shape: the input's (N, 3, H, W); each side must be at least ``min_input_size`` of the deepest tap.
    """
    if not taps:
        raise ValueError("forward needs at least one tap")
    depth = max(layer_index(t) for t in taps) + 1
    if len(shape) != 4 or shape[1] != 3:
        raise ValueError(f"expected an (N, 3, H, W) image batch, got shape {tuple(shape)}")
    need = min_input_size(LAYER_NAMES[depth - 1])
    if min(shape[2:]) < need:
        raise ValueError(f"a {shape[2]}x{shape[3]} image is too small for "
                         f"{LAYER_NAMES[depth - 1]}: it needs at least {need}x{need} pixels")
    return depth


def layer_outputs(height: int, width: int, last: str):
    """[(name, C_in, C_out, h, w)] of every layer up to and including ``last``; output (1, C_out, h, w)."""
    h, w = height, width
    table = []
    for name, cin, cout in LAYERS[:layer_index(last) + 1]:
        if name.startswith("pool"):
            h, w = pool_output_size(h, w, 2, 2)
        table.append((name, cin, cout, h, w))
    return table
