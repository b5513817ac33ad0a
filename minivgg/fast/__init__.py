"""The fast engine: the reference engine (``minivgg.vgg``, ``losses``) transformed for speed and memory.

Each module is one transformation of a reference module, tested against it
(``tests/test_fast_*.py``), with its measured gain in its docstring:

    arrays.py     an explicit ArrayPool: evaluation k+1 reuses evaluation k's memory
    layout.py     channels-last activations on the CPU: views instead of copies
    conv.py       im2col in row tiles (bounded memory), bias and ReLU fused,
                  dx by the transposed convolution or tiled col2im  (twin: minivgg/conv.py)
    winograd.py   Winograd's minimal filtering F(4x4,3x3) and F(2x2,3x3)  (twin: minivgg/conv.py)
    pooling.py    average pooling summed separably, in row blocks  (twin: minivgg/pool.py)
    losses.py     content and style losses on channels-last features, unmasked,
                  the style gradient in spans  (twin: losses/)
    guided.py     the guided (masked) style loss on channels-last features, in spans
                  (twin: losses/guided.py)
    lean.py       the memory-lean mode: ReLU masks of non-tap layers kept as bits
                  (twin: relu.py's cache)
    network.py    FastVGG19: the walk with all of the above  (twin: minivgg/vgg.py)
    objective.py  FastEvaluator: the pool's owner, lazy style gradients  (twin: Objective)

``minivgg.VGG19(params, engine="fast")`` (the default) runs it;
``engine="reference"`` runs the plain code the notebooks step through.
"""
