"""One benchmark case, run inside ``python -m minivgg.bench``'s worker subprocess.

``minivgg.bench`` (the command) starts one fresh interpreter per case and
reads back the JSON row printed by one of these:

    run_ours(case)       one evaluation of the objective on minivgg (fast or reference engine)
    run_optimizer(case)  the optimiser's own seconds per iteration (scipy or lbfgs-device)
    run_torch(case)      the same objective in PyTorch (autograd), if importable

and the measurements they share: the exact multiply-add count of the
convolutions (``forward_macs``, ``objective_flops``), the BLAS in use, the
weights (real or seeded random), seeded images, the timing loop, peak memory
(RSS on the CPU, the CuPy pool on the GPU) and this machine's matmul rate.
The command's docstring says what each reported field means.
"""
from __future__ import annotations

import dataclasses

import os
import resource
import statistics
import sys
import time

import numpy

from minivgg.architecture import PAPER_STYLE_LAYERS, layer_outputs
from minivgg.memory import estimate_peak_bytes

CONTENT_LAYER = "conv4_2"
ALPHA, BETA = 1e-3, 1.0
SEED = 0


def forward_macs(height: int, width: int, last: str = "conv5_1") -> int:
    """Multiply-adds of every convolution up to ``last`` on a height x width image: sum C_in C_out 9 h w."""
    return sum(cin * cout * 9 * h * w
               for name, cin, cout, h, w in layer_outputs(height, width, last) if name.startswith("conv"))


def objective_flops(height: int, width: int, last: str = "conv5_1") -> int:
    """FLOP of one evaluation's convolutions: forward MACs, as many again backward, 2 FLOP per MAC."""
    return 2 * 2 * forward_macs(height, width, last)


def blas_info() -> dict:
    """NumPy's BLAS (name, version) and the OpenBLAS/OpenMP environment variables that are set."""
    info = {}
    try:
        blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["blas"] = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # older NumPy: no dict mode
        info["blas"] = "unknown"
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                "MKL_NUM_THREADS"):
        if var in os.environ:
            info[var] = os.environ[var]
    return info


def load_params(source: str = "real") -> dict:
    """{"conv1_1": (w, b), ...} float32 NumPy: the real VGG-19 weights, or seeded random ones.

    "random" (He-normal, seed 0) is for machines that cannot fetch the real
    weights: every convolution is dense, so speed and memory do not depend
    on the values (the losses do).
    """
    if source == "real":
        import weights
        return weights.load_vgg19()
    if source != "random":
        raise ValueError(f"weights must be 'real' or 'random', not {source!r}")
    import weights
    return weights.untrained_vgg19(seed=SEED)


def _images(height: int, width: int):
    """Seeded content, style and starting images, (1, 3, H, W) float64 NumPy, in the network's input range."""
    rng = numpy.random.default_rng(SEED)
    content = rng.uniform(-120.0, 130.0, (1, 3, height, width))
    style = rng.uniform(-120.0, 130.0, (1, 3, height, width))
    x = rng.normal(0.0, 30.0, (1, 3, height, width))
    return content, style, x


def _peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _timed(evaluate, sync, warmup: int, repeats: int) -> list:
    """Wall seconds of ``repeats`` calls of evaluate() after ``warmup`` ones.

    evaluate() returns an array; sync(array) waits for the device to finish
    it before the clock is read (nothing is left queued between calls).
    """
    for _ in range(warmup):
        sync(evaluate())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = evaluate()
        sync(result)
        times.append(time.perf_counter() - start)
    return times


class _GpuPeak:
    """Peak bytes in use in CuPy's default memory pool, updated at every allocation."""

    def __init__(self, xp):
        self.pool = xp.get_default_memory_pool()
        self.peak = 0
        xp.cuda.set_allocator(self.malloc)

    def malloc(self, nbytes):
        memory = self.pool.malloc(nbytes)
        self.peak = max(self.peak, self.pool.used_bytes())
        return memory


def _matmul_gflops(xp, sync, n: int) -> float:
    """Best of three n x n float32 products, in GFLOP/s (2 n^3 FLOP each)."""
    a = xp.asarray(numpy.random.default_rng(1).standard_normal((n, n), dtype=numpy.float32))
    c = a @ a
    sync(c)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        c = xp.matmul(a, a, out=c)
        sync(c)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n ** 3 / best / 1e9


def run_ours(case: dict) -> dict:
    """One case of our implementation, in this process: the result row (a dict)."""
    from minivgg.backend import get_array_module, gpu_status, synchronize, to_device
    from minivgg.transfer.objective import Objective
    from minivgg.vgg import VGG19

    size, device, dtype = case["size"], case["device"], case["dtype"]
    gpu_peak = None
    if device == "gpu":
        ok, why = gpu_status()
        if not ok:
            raise RuntimeError(f"--device gpu is not available: {why}")
        gpu_peak = _GpuPeak(get_array_module(to_device(numpy.zeros(1), "gpu")))
    params = load_params(case["weights"])
    conv = case.get("conv", "winograd")
    engine = "reference" if conv == "reference" else "fast"
    transforms = None
    if case.get("transforms") is not None:                         # --ablate: one route of the fast engine
        from minivgg.fast.transforms import Transforms
        transforms, conv = Transforms(**case["transforms"]), None
    net = VGG19(params, pooling="avg", dtype=dtype, device=device, engine=engine,
                conv=None if engine == "reference" else conv, transforms=transforms)
    del params                                                      # the network holds what it needs
    content, style, x = (to_device(a, device).astype(dtype) for a in _images(size, size))
    style_loss = case.get("style_loss", "gram")
    objective = Objective(net, content, [style], alpha=ALPHA, beta=BETA, content_layer=CONTENT_LAYER,
                          style_layers=PAPER_STYLE_LAYERS, style_loss=style_loss)
    xp = get_array_module(x)
    sync = synchronize                                              # waits for the GPU; no-op on NumPy
    last = {}

    def evaluate():
        last["ev"] = objective(x)
        return last["ev"].grad

    times = _timed(evaluate, sync, case["warmup"], case["repeats"])
    row = _row(case, "minivgg", times, float(last["ev"].total_loss))
    row["peak_rss_bytes"] = _peak_rss_bytes()
    if gpu_peak is not None:
        row["peak_gpu_bytes"] = gpu_peak.peak
        row["gpu_pool_total_bytes"] = int(gpu_peak.pool.total_bytes())
        row["gpu"] = gpu_status()[1]
    lbfgs = case.get("lbfgs_iterations", 0)
    row["estimated_peak_bytes"] = estimate_peak_bytes(
        size, size, dtype, content_layer=CONTENT_LAYER, style_layers=PAPER_STYLE_LAYERS,
        pooling="avg", device=device, optimizer="lbfgs" if lbfgs else None, maxcor=case["maxcor"],
        conv="winograd" if engine == "reference" else net.fast.conv, engine=engine,
        lean=engine == "fast" and net.fast.lean, style_loss=style_loss,
        workers=net.fast.band_workers if engine == "fast" else 1,
        separable=engine == "fast" and net.fast.transforms.separable_winograd)
    row["conv"] = conv or net.fast.conv
    if case.get("switch"):
        row["switch"] = case["switch"]
        row["transforms"] = dataclasses.asdict(net.fast.transforms)   # the route the network really ran
    if style_loss != "gram":
        row["style_loss"] = style_loss
    if lbfgs:
        from optim.lbfgs import lbfgs as run_lbfgs
        run_lbfgs(objective, x, lbfgs, maxcor=case["maxcor"])
        row["lbfgs_iterations"] = lbfgs
        row["peak_rss_bytes"] = _peak_rss_bytes()
        if gpu_peak is not None:
            row["peak_gpu_bytes"] = gpu_peak.peak
    measured = row["peak_gpu_bytes"] if device == "gpu" else row["peak_rss_bytes"]
    row["estimate_error"] = row["estimated_peak_bytes"] / measured - 1.0
    del objective, net, last, content, style, x
    row["matmul_gflops"] = _matmul_gflops(xp, sync, 8192 if device == "gpu" else 2048)
    row["fraction_of_matmul"] = row["gflops"] / row["matmul_gflops"]
    return row


def run_optimizer(case: dict) -> dict:
    """One optimiser on the paper's objective at size x 3/4 size (4:3, like the demo's photo): its own
    seconds per iteration, the evaluations' time taken out. The result row (a dict)."""
    from minivgg.backend import synchronize, to_device
    from minivgg.image import pixel_bounds
    from minivgg.transfer.objective import Objective
    from minivgg.vgg import VGG19
    from optim import lbfgs, lbfgs_device

    width, device, dtype = case["size"], case["device"], case["dtype"]
    height = width * 3 // 4
    net = VGG19(load_params(case["weights"]), pooling="avg", dtype=dtype, device=device)
    content, style, x0 = (to_device(a, device).astype(dtype) for a in _images(height, width))
    objective = Objective(net, content, [style], alpha=ALPHA, beta=BETA, content_layer=CONTENT_LAYER,
                          style_layers=PAPER_STYLE_LAYERS)
    spent = []

    def timed(x):
        start = time.perf_counter()
        ev = objective(x)
        synchronize(ev.grad)
        spent.append(time.perf_counter() - start)
        return ev

    timed(x0)                                                       # warm-up: first-use costs out
    spent.clear()
    run = lbfgs if case["optimizer"] == "lbfgs" else lbfgs_device
    start = time.perf_counter()
    result = run(timed, x0, case["iterations"], bounds=pixel_bounds(), maxcor=case["maxcor"])
    wall = time.perf_counter() - start
    iterations = max(result.iterations, 1)
    row = {"impl": "minivgg", "optimizer": case["optimizer"], "size": width, "height": height,
           "width": width, "unknowns": 3 * height * width, "device": device, "dtype": dtype,
           "iterations": result.iterations, "evaluations": len(spent),
           "seconds_per_eval": statistics.median(spent),
           "optimizer_seconds_per_iteration": (wall - sum(spent)) / iterations,
           "final_loss": result.loss, "maxcor": case["maxcor"], "weights": case["weights"]}
    row.update(blas_info())
    return row


def run_torch(case: dict) -> dict:
    """The same objective in PyTorch (autograd), in this process: the result row. Needs torch."""
    import torch
    import torch.nn.functional as F

    from minivgg.architecture import LAYER_NAMES, layer_index

    size, dtype = case["size"], getattr(torch, case["dtype"])
    dev = "cuda" if case["device"] == "gpu" else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    params = {name: tuple(torch.from_numpy(numpy.ascontiguousarray(a)).to(dev, dtype) for a in wb)
              for name, wb in load_params(case["weights"]).items()}
    taps = PAPER_STYLE_LAYERS + (CONTENT_LAYER,)
    depth = max(layer_index(t) for t in taps) + 1

    def forward(v):
        feats, out = {}, v
        for name in LAYER_NAMES[:depth]:
            if name.startswith("conv"):
                out = F.relu(F.conv2d(out, *params[name], padding=1))
            else:
                out = F.avg_pool2d(out, 2, 2)
            if name in taps:
                feats[name] = out
        return feats

    def gram(f):
        fmat = f.reshape(f.shape[1], -1)                            # (C, M)
        return fmat @ fmat.T                                        # (C, C)

    content, style, x0 = (torch.from_numpy(a).to(dev, dtype) for a in _images(size, size))
    with torch.no_grad():
        target = forward(content)[CONTENT_LAYER].clone()
        grams = {name: gram(f) for name, f in forward(style).items() if name in PAPER_STYLE_LAYERS}
    x = x0.clone().requires_grad_(True)
    last = {}

    def evaluate():
        x.grad = None
        feats = forward(x)
        content_loss = 0.5 * ((feats[CONTENT_LAYER] - target) ** 2).sum()
        style_loss = 0.0
        for name in PAPER_STYLE_LAYERS:
            f = feats[name]
            n_l, m_l = f.shape[1], f.shape[2] * f.shape[3]
            e_l = ((gram(f) - grams[name]) ** 2).sum() / (4.0 * n_l ** 2 * m_l ** 2)
            style_loss = style_loss + e_l / len(PAPER_STYLE_LAYERS)    # w_l = 1/5
        total = ALPHA * content_loss + BETA * style_loss
        total.backward()
        last["total"] = total.detach()
        return x.grad

    def sync(_):
        if dev == "cuda":
            torch.cuda.synchronize()

    times = _timed(evaluate, sync, case["warmup"], case["repeats"])
    row = _row(case, "torch", times, float(last["total"]))
    row["torch"] = torch.__version__
    row["torch_threads"] = torch.get_num_threads()
    row["peak_rss_bytes"] = _peak_rss_bytes()
    if dev == "cuda":
        row["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated())
    return row


def _row(case: dict, impl: str, times: list, total_loss: float) -> dict:
    seconds = statistics.median(times)
    row = {"impl": impl, "size": case["size"], "device": case["device"], "dtype": case["dtype"],
           "seconds_per_eval": seconds, "min_seconds": min(times), "repeats": len(times),
           "gflops": objective_flops(case["size"], case["size"]) / seconds / 1e9,
           "total_loss": total_loss, "weights": case["weights"]}
    row.update(blas_info())
    return row
