"""Benchmark one evaluation of Gatys et al.'s objective: seconds, GFLOP/s, peak memory.

    python -m minivgg.bench --sizes 256 512 --device cpu          # a readable table
    python -m minivgg.bench --sizes 512 --device gpu --json       # one JSON object per line and case
    python -m minivgg.bench --sizes 256 --torch                   # PyTorch beside ours, if importable

One evaluation is what L-BFGS asks for at every step: the forward pass to
conv5_1, the paper's losses (content conv4_2, style conv1_1..conv5_1 with
w_l = 1/5, alpha 1e-3, beta 1, average pooling), and the backward pass to the
pixels, on the real VGG-19 weights (``weights.load_vgg19``; ``--weights
random`` where they cannot be fetched) and seeded random images. Each case
(size, implementation) runs in a fresh subprocess, so its peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``) is the honest peak of that case
alone: loading, building the objective, and the evaluations. On the GPU the
peak is that of the CuPy memory pool (bytes in use, tracked at every
allocation) and the pool's total reservation.

Reported per case:

* ``seconds_per_eval``: the median of ``--repeats`` evaluations after
  ``--warmup`` ones (the GPU synchronised before each clock read);
* ``gflops``: the exact multiply-add count of the convolutions, over that
  time. Forward MACs are sum over convs of C_in * C_out * 9 * h * w (361,152
  per input pixel up to conv5_1 at sizes divisible by 16); the backward to
  the input costs the same again (conv1_1's included, since the image
  gradient is asked for); 2 FLOP per MAC: FLOP = 4 * forward MACs. Pooling,
  ReLU and the losses are not counted;
* ``matmul_gflops``: this machine's float32 matmul throughput measured in the
  same process after the evaluations (a large square product, best of three),
  and ``fraction_of_matmul`` = gflops / matmul_gflops;
* ``conv``: how minivgg ran its convolutions (``--conv``: the fast engine
  with winograd, the default, or im2col; or ``reference``, the reference
  engine of ``minivgg.vgg``). The GFLOP/s always count the direct convolution's
  multiply-adds, so for Winograd, which does fewer, they are an *effective*
  rate and ``fraction_of_matmul`` can exceed 1: compare seconds.
* ``peak_rss_bytes`` and ``estimated_peak_bytes`` (``minivgg.memory``) with
  ``estimate_error`` = estimate / measured - 1;
* the BLAS NumPy was built with and the OpenBLAS environment variables set
  (OPENBLAS_CORETYPE and friends change the kernels OpenBLAS picks).

``--torch`` runs the same objective in PyTorch (autograd, F.conv2d) beside
ours, in its own subprocess, when torch is importable; it is never a
dependency of minivgg. TF32 is switched off there, as CuPy's float32 GEMMs do
not use it. ``--optimizer lbfgs lbfgs-device`` times the optimisers instead:
the optimiser's own seconds per iteration (``optimizer_seconds_per_iteration``,
wall time minus the time inside evaluations) beside ``seconds_per_eval``, on a
SIZE x 3/4 SIZE image (512 -> 512x384, 590k unknowns), float32, real weights.
``--lbfgs-iterations N`` additionally runs N L-BFGS-B iterations
(``optim.lbfgs``) after the timings, to measure the optimiser's memory too.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
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
    from minivgg.architecture import CONV_SHAPES
    rng = numpy.random.default_rng(SEED)
    return {name: ((rng.standard_normal(shape) * (2.0 / (shape[1] * 9)) ** 0.5).astype(numpy.float32),
                   numpy.zeros(shape[0], numpy.float32))
            for name, shape in CONV_SHAPES.items()}


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
    net = VGG19(params, pooling="avg", dtype=dtype, device=device, engine=engine,
                conv=None if engine == "reference" else conv)
    del params                                                      # the network holds what it needs
    content, style, x = (to_device(a, device).astype(dtype) for a in _images(size, size))
    objective = Objective(net, content, [style], alpha=ALPHA, beta=BETA, content_layer=CONTENT_LAYER,
                          style_layers=PAPER_STYLE_LAYERS)
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
        conv="winograd" if engine == "reference" else conv, engine=engine)
    row["conv"] = conv
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


def _run_case_in_subprocess(case: dict) -> dict:
    """Run one case in a fresh interpreter (``--worker``) and return its row, or {"error": ...}."""
    done = subprocess.run([sys.executable, "-m", "minivgg.bench", "--worker", json.dumps(case)],
                          capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {**case, "error": " | ".join(tail) or f"exit status {done.returncode}"}
    return json.loads(lines[-1])


def torch_importable() -> bool:
    """Whether ``import torch`` would work here (without importing it)."""
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def _label(row: dict) -> str:
    """minivgg:winograd, minivgg:im2col or torch."""
    return f"{row.get('impl', '?')}:{row['conv']}" if row.get("conv") else row.get("impl", "?")


def _table(rows: list) -> str:
    header = (f"{'impl':16} {'size':>5} {'dev':4} {'dtype':8} {'s/eval':>8} {'GFLOP/s':>8} "
              f"{'matmul':>8} {'%mm':>5} {'peak MB':>8} {'est MB':>8} {'est err':>8}")
    lines = [header]
    for r in rows:
        if "error" in r:
            lines.append(f"{_label(r):16} {r['size']:>5} {r['device']:4} failed: {r['error']}")
            continue
        peak = r.get("peak_gpu_bytes", r["peak_rss_bytes"])
        est = r.get("estimated_peak_bytes")
        mm = r.get("matmul_gflops")
        lines.append(
            f"{_label(r):16} {r['size']:>5} {r['device']:4} {r['dtype']:8} {r['seconds_per_eval']:8.3f} "
            f"{r['gflops']:8.1f} {mm if mm else float('nan'):8.1f} "
            f"{100 * r['fraction_of_matmul'] if mm else float('nan'):5.1f} {peak / 2**20:8.0f} "
            f"{est / 2**20 if est else float('nan'):8.0f} "
            f"{100 * r['estimate_error'] if est else float('nan'):7.1f}%")
    info = blas_info()
    lines.append("BLAS: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minivgg.bench",
        description="Time one evaluation of Gatys et al.'s objective (forward to conv5_1, the paper's "
                    "losses, backward to the pixels) on the real VGG-19 weights: seconds per evaluation "
                    "(median), GFLOP/s from the exact conv multiply-add count, the fraction of this "
                    "machine's float32 matmul throughput, and peak memory against minivgg.memory's "
                    "estimate. Each case runs in its own subprocess so its peak memory is its own.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512],
                        help="square image sizes in pixels (default: 256 512)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="cpu (NumPy) or gpu (CuPy); default cpu")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--repeats", type=int, default=5, help="timed evaluations per case (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed evaluations first (default 1)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line and case")
    parser.add_argument("--torch", action="store_true",
                        help="also time the same objective in PyTorch, if importable (skipped otherwise)")
    parser.add_argument("--conv", choices=("winograd", "im2col", "reference"), nargs="+", default=["winograd"],
                        help="how minivgg computes its convolutions: the fast engine with winograd "
                             "(default) or im2col, or the reference engine (plain im2col, whole); give "
                             "several to time them in the same run")
    parser.add_argument("--weights", choices=("real", "random"), default="real",
                        help="real: VGG-19 via weights.load_vgg19() (default); random: seeded weights of "
                             "the same shapes, for machines that cannot fetch the real ones")
    parser.add_argument("--lbfgs-iterations", type=int, default=0, metavar="N",
                        help="after timing, run N L-BFGS-B iterations so the peak includes the optimiser")
    parser.add_argument("--maxcor", type=int, default=20, help="L-BFGS-B correction pairs (default 20)")
    parser.add_argument("--optimizer", choices=("lbfgs", "lbfgs-device"), nargs="+",
                        help="time these optimisers instead of one evaluation: each runs "
                             "--optimizer-iterations iterations on a SIZE x 3/4 SIZE image and reports "
                             "its own seconds per iteration (evaluations excluded) beside the seconds "
                             "per evaluation")
    parser.add_argument("--optimizer-iterations", type=int, default=20, metavar="N",
                        help="iterations per optimiser with --optimizer (default 20)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)        # internal: run one case, print its row
    return parser


def _optimizer_rows(args) -> int:
    """--optimizer: one subprocess per (size, optimiser), one JSON row (or table line) each."""
    failed = False
    for size in args.sizes:
        for optimizer in dict.fromkeys(args.optimizer):
            case = {"impl": "optimizer", "optimizer": optimizer, "size": size, "device": args.device,
                    "dtype": args.dtype, "maxcor": args.maxcor, "weights": args.weights,
                    "iterations": args.optimizer_iterations}
            row = _run_case_in_subprocess(case)
            failed |= "error" in row
            if args.json:
                print(json.dumps(row), flush=True)
            elif "error" in row:
                print(f"{optimizer:13} {size:>5}: failed: {row['error']}")
            else:
                print(f"{optimizer:13} {row['width']}x{row['height']} {row['unknowns']:>8} unknowns: "
                      f"{row['seconds_per_eval']:.3f} s/evaluation, optimiser "
                      f"{row['optimizer_seconds_per_iteration']:.4f} s/iteration "
                      f"({row['optimizer_seconds_per_iteration'] / row['seconds_per_eval']:.1%} of an "
                      f"evaluation), {row['iterations']} iterations, {row['evaluations']} evaluations")
    return 1 if failed else 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        case = json.loads(args.worker)
        run = {"torch": run_torch, "optimizer": run_optimizer}.get(case["impl"], run_ours)
        row = run(case)
        print(json.dumps(row), flush=True)
        return 0
    if args.optimizer:
        return _optimizer_rows(args)
    impls = [("minivgg", conv) for conv in dict.fromkeys(args.conv)]
    if args.torch:
        if torch_importable():
            impls.append(("torch", None))
        else:
            print("--torch: PyTorch is not importable here; timing minivgg only", file=sys.stderr)
    rows, failed = [], False
    for size in args.sizes:
        ours = None                                                 # the first minivgg row: torch's ratio
        for impl, conv in impls:
            case = {"impl": impl, "size": size, "device": args.device, "dtype": args.dtype,
                    "repeats": args.repeats, "warmup": args.warmup, "maxcor": args.maxcor,
                    "weights": args.weights,
                    "lbfgs_iterations": args.lbfgs_iterations if impl == "minivgg" else 0}
            if conv:
                case["conv"] = conv
            row = _run_case_in_subprocess(case)
            failed |= "error" in row
            if impl == "minivgg" and ours is None:
                ours = row
            if args.json:
                if impl == "torch" and "error" not in row and ours is not None and "error" not in ours:
                    row["ours_over_torch_seconds"] = ours["seconds_per_eval"] / row["seconds_per_eval"]
                    row["loss_rel_diff_vs_ours"] = abs(row["total_loss"] / ours["total_loss"] - 1)
                print(json.dumps(row), flush=True)
            rows.append(row)
    if not args.json:
        print(_table(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
