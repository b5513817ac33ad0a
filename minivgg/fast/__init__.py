"""The fast engine: the reference engine (``minivgg.network``, ``losses``) transformed for speed and memory.

Each module is one transformation of a reference module, tested against it
(``tests/test_fast_*.py``); each transformation is a switch of
``transforms.Transforms``, every combination of them is tested against the
reference engine (``tests/test_fast_transforms.py``), and each one's gain in time
and peak memory is measured by ``python -m minivgg.bench --sizes 256 512 --ablate``:

    transforms.py the switches: one bool per transformation, defaults = the default route
    arrays.py     an explicit ArrayPool: evaluation k+1 reuses evaluation k's memory
    layout.py     channels-last activations: views instead of copies
    conv.py       im2col in row tiles (bounded memory), bias and ReLU fused,
                  dx by the transposed convolution or tiled col2im  (twin: minivgg/conv.py)
    winograd.py   Winograd's minimal filtering F(4x4,3x3) and F(2x2,3x3)  (twin: minivgg/conv.py)
    pooling.py    average pooling summed separably, in row blocks  (twin: minivgg/pool.py)
    losses.py     the reference losses' forwards; their gradients on channels-last features,
                  unmasked, the style gradient in spans  (twin: losses/)
    guided.py     the guided (masked) style loss on channels-last features, in spans
                  (twin: losses/guided.py)
    lean.py       the memory-lean mode: ReLU masks of non-tap layers kept as bits
                  (twin: relu.py's cache)
    network.py    FastVGG19: the reference's walks with all of the above  (twin: minivgg/network.py)
    objective.py  FastEvaluator: the pool's owner, deferred style gradients
                  (twin: minivgg.transfer.objective.Objective.__call__)

The fast tier imports the reference tier (its caches, walks, losses), never the
other way; ``minivgg.vgg.VGG19(params, engine="fast")`` (the default) chooses
it, ``engine="reference"`` runs the plain code the notebooks step through.
"""
