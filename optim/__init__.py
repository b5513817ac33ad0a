"""Optimisers over the image: L-BFGS-B through scipy (the paper's choice), L-BFGS with box bounds
on the image's own device (``lbfgs_device``), gradient descent, Adam.

``optim.boundary`` is the only place where engine arrays (NumPy or CuPy, float32
or float64, shaped (1, 3, H, W)) become scipy's 1-D contiguous float64 NumPy
vectors, and back.
"""
from optim.boundary import BestPoint, FlatObjective, Stopped
from optim.first_order import adam, gradient_descent
from optim.lbfgs import lbfgs
from optim.lbfgs_device import lbfgs_device
from optim.progress import Progress
from optim.result import OptimResult

__all__ = ["BestPoint", "FlatObjective", "Stopped", "OptimResult", "Progress", "lbfgs", "lbfgs_device", "adam", "gradient_descent"]
