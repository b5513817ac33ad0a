"""minivgg: Gatys, Ecker & Bethge's neural style transfer with hand-written gradients.

Layers (``conv``, ``relu``, ``pool``) are forward/backward pairs on NumPy or
CuPy arrays; ``network.ReferenceVGG19`` chains them (the reference engine),
``minivgg.fast`` transforms them for speed (the fast engine), and ``VGG19``
(``minivgg.vgg``) builds either, ``engine="fast"`` by default;
``minivgg.transfer`` is the algorithm.
"""
from minivgg.backend import get_array_module, gpu_status, to_device, to_numpy
from minivgg.architecture import LAYER_NAMES

__all__ = ["VGG19", "LAYER_NAMES", "get_array_module", "gpu_status", "to_device", "to_numpy"]
__version__ = "0.1.0"


def __getattr__(name):
    """``minivgg.VGG19``, imported on first use: ``minivgg.backend``, which the losses and the
    optimisers import, must not pull in the network, whose fast engine imports the losses."""
    if name == "VGG19":
        from minivgg.vgg import VGG19
        return VGG19
    raise AttributeError(f"module 'minivgg' has no attribute {name!r}")
