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
  engine of ``minivgg.network``). The GFLOP/s always count the direct convolution's
  multiply-adds, so for Winograd, which does fewer, they are an *effective*
  rate and ``fraction_of_matmul`` can exceed 1: compare seconds.
* ``peak_rss_bytes`` and ``estimated_peak_bytes`` (``minivgg.memory``) with
  ``estimate_error`` = estimate / measured - 1;
* the BLAS NumPy was built with and the OpenBLAS environment variables set
  (OPENBLAS_CORETYPE and friends change the kernels OpenBLAS picks).

``--ablate`` measures the fast engine's transformations
(``minivgg.fast.transforms.Transforms``) from one run: per size, the default
route, then the route with each switch flipped in turn (each transformation
off; the lean mode, off by default, on), each in its own subprocess, and a
second table with each transformation's gain: the time without it over the
time with it, and the peak memory without it minus with it (MB). This is the
command the fast tier's docstrings cite for their gains:

    python -m minivgg.bench --sizes 256 512 --ablate

``--rounds N`` runs the whole list of cases N times, alternating (the second
round in reverse order, and so on), and reports per case the median of its
rounds' seconds and the largest of their peaks (``round_seconds`` lists each
round's): on a shared machine, whose speed drifts over minutes, ours and
PyTorch's times are then taken side by side rather than a minute apart. With
``--torch`` a last line gives, per size, our time and peak over PyTorch's.

``--torch`` runs the same objective in PyTorch (autograd, F.conv2d) beside
ours, in its own subprocess, when torch is importable; it is never a
dependency of minivgg. TF32 is switched off there, as CuPy's float32 GEMMs do
not use it. ``--optimizer lbfgs lbfgs-device`` times the optimisers instead:
the optimiser's own seconds per iteration (``optimizer_seconds_per_iteration``,
wall time minus the time inside evaluations) beside ``seconds_per_eval``, on a
SIZE x 3/4 SIZE image (512 -> 512x384, 590k unknowns), float32, real weights.
``--lbfgs-iterations N`` additionally runs N L-BFGS-B iterations
(``optim.lbfgs``) after the timings, to measure the optimiser's memory too.

This module is the command (options, one subprocess per case, the table);
``minivgg.bench_cases`` holds what runs inside each subprocess.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys

from losses.statistics import STYLE_STATISTICS
from minivgg.bench_cases import blas_info, run_optimizer, run_ours, run_torch
from minivgg.fast.transforms import Transforms


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
    """minivgg:winograd, minivgg:im2col, minivgg:winograd:mean-std (another style loss), minivgg:default
    or minivgg:lean-on (--ablate), or torch."""
    if row.get("switch"):
        return f"{row.get('impl', '?')}:{row['switch']}"
    label = f"{row.get('impl', '?')}:{row['conv']}" if row.get("conv") else row.get("impl", "?")
    return label + (f":{row['style_loss']}" if row.get("style_loss", "gram") != "gram" else "")


def ablation_cases(device: str) -> list:
    """--ablate's routes: [(label, {switch: bool})], the default route first, then each switch flipped."""
    default = Transforms.default(device)
    cases = [("default", dataclasses.asdict(default))]
    for name in Transforms.names():
        flipped = not getattr(default, name)
        cases.append((f"{name}-{'on' if flipped else 'off'}",
                      dataclasses.asdict(dataclasses.replace(default, **{name: flipped}))))
    return cases


def _peak(row: dict) -> int:
    """The peak a row's memory is judged by: the GPU pool's on the GPU, the process's RSS on the CPU."""
    return row.get("peak_gpu_bytes", row.get("peak_rss_bytes", 0))


def ablation_table(rows: list) -> str:
    """Each transformation's gain, per size: seconds and peak without it over / minus with it.

    rows: --ablate's rows (those with a "switch"); a switch flipped off is compared with the
    default route, one flipped on (the lean mode) the other way round.
    """
    lines = [f"{'transformation':16} {'size':>5} {'s/eval on':>10} {'s/eval off':>10} {'time off/on':>11} "
             f"{'MB on':>8} {'MB off':>8} {'MB off-on':>9}"]
    for size in dict.fromkeys(r["size"] for r in rows):
        default = next((r for r in rows if r["size"] == size and r.get("switch") == "default"), None)
        for row in rows:
            if row["size"] != size or row.get("switch") in (None, "default"):
                continue
            name, state = row["switch"].rsplit("-", 1)
            if default is None or "error" in row or "error" in default:
                lines.append(f"{name:16} {size:>5} failed: {row.get('error') or default and default.get('error')}")
                continue
            on, off = (default, row) if state == "off" else (row, default)
            lines.append(f"{name:16} {size:>5} {on['seconds_per_eval']:10.3f} {off['seconds_per_eval']:10.3f} "
                         f"{off['seconds_per_eval'] / on['seconds_per_eval']:10.2f}x "
                         f"{_peak(on) / 2**20:8.0f} {_peak(off) / 2**20:8.0f} "
                         f"{(_peak(off) - _peak(on)) / 2**20:9.0f}")
    return "\n".join(lines)


def _table(rows: list) -> str:
    width = max([16] + [len(_label(r)) for r in rows])
    header = (f"{'impl':{width}} {'size':>5} {'dev':4} {'dtype':8} {'s/eval':>8} {'GFLOP/s':>8} "
              f"{'matmul':>8} {'%mm':>5} {'peak MB':>8} {'est MB':>8} {'est err':>8}")
    lines = [header]
    for r in rows:
        if "error" in r:
            lines.append(f"{_label(r):{width}} {r['size']:>5} {r['device']:4} failed: {r['error']}")
            continue
        peak = r.get("peak_gpu_bytes", r["peak_rss_bytes"])
        est = r.get("estimated_peak_bytes")
        mm = r.get("matmul_gflops")
        lines.append(
            f"{_label(r):{width}} {r['size']:>5} {r['device']:4} {r['dtype']:8} {r['seconds_per_eval']:8.3f} "
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
    parser.add_argument("--style-loss", nargs="+", default=["gram"], choices=tuple(STYLE_STATISTICS),
                        help="the style statistics to time (default gram, the paper's; losses/statistics.py): "
                             "the others run the reference losses on the fast engine's features")
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
    parser.add_argument("--ablate", action="store_true",
                        help="time the fast engine's default route, then the route with each transformation "
                             "switched off in turn (the lean mode on), and print each one's gain in time "
                             "and peak memory (minivgg.fast.transforms.Transforms); replaces --conv")
    parser.add_argument("--rounds", type=int, default=1, metavar="N",
                        help="run the whole list of cases N times, alternating their order, and report each "
                             "case's median seconds and largest peak over the rounds (default 1): on a "
                             "shared machine whose speed drifts, ratios then compare runs made side by side")
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
    impls = [("minivgg", conv, loss, None) for conv in dict.fromkeys(args.conv) for loss in dict.fromkeys(args.style_loss)]
    if args.ablate:
        impls = [("minivgg", "winograd", "gram", route) for route in ablation_cases(args.device)]
    if args.torch:
        if torch_importable():
            impls.append(("torch", None, "gram", None))
        else:
            print("--torch: PyTorch is not importable here; timing minivgg only", file=sys.stderr)
    if args.rounds < 1:
        print(f"error: --rounds must be at least 1, not {args.rounds}", file=sys.stderr)
        return 2
    cases = []
    for size in args.sizes:
        for impl, conv, style_loss, route in impls:
            case = {"impl": impl, "size": size, "device": args.device, "dtype": args.dtype,
                    "repeats": args.repeats, "warmup": args.warmup, "maxcor": args.maxcor,
                    "weights": args.weights,
                    "lbfgs_iterations": args.lbfgs_iterations if impl == "minivgg" else 0}
            if conv:
                case["conv"] = conv
            if style_loss != "gram":
                case["style_loss"] = style_loss
            if route:
                case["switch"], case["transforms"] = route
            cases.append(case)
    runs = [[] for _ in cases]                                      # each case's rows, one per round
    for r in range(args.rounds):
        order = range(len(cases)) if r % 2 == 0 else reversed(range(len(cases)))
        for i in order:
            runs[i].append(_run_case_in_subprocess(cases[i]))
            if args.rounds > 1 and not args.json:
                print(f"round {r + 1}/{args.rounds}: {_label(runs[i][-1])} {cases[i]['size']} done",
                      file=sys.stderr, flush=True)
    rows = [merge_rounds(rs) for rs in runs]
    failed = any("error" in row for row in rows)
    for size in args.sizes:
        here = [(case, row) for case, row in zip(cases, rows) if case["size"] == size]
        ours = next((row for case, row in here if case["impl"] == "minivgg" and "style_loss" not in case), None)
        for case, row in here:
            if case["impl"] == "torch" and "error" not in row and ours is not None and "error" not in ours:
                row["ours_over_torch_seconds"] = ours["seconds_per_eval"] / row["seconds_per_eval"]
                row["ours_over_torch_peak"] = _peak(ours) / _peak(row)
                row["loss_rel_diff_vs_ours"] = abs(row["total_loss"] / ours["total_loss"] - 1)
    if args.json:
        for row in rows:
            print(json.dumps(row), flush=True)
        return 1 if failed else 0
    print(_table(rows))
    if args.ablate:
        print(ablation_table([r for r in rows if r.get("switch")]))
    ratios = [f"{r['size']}: time {r['ours_over_torch_seconds']:.2f}x, "
              f"peak memory {r['ours_over_torch_peak']:.2f}x" for r in rows if "ours_over_torch_seconds" in r]
    if ratios:
        print("minivgg (default route) over PyTorch, " + "; ".join(ratios))
    return 1 if failed else 0


def merge_rounds(rows: list) -> dict:
    """One case's row from its rounds' rows (``--rounds``): the median seconds (GFLOP/s and the matmul
    fraction at that time), the largest peak (and the estimate's error against it), each round's
    seconds in ``round_seconds``; the first failed round's row if any failed."""
    failed = [row for row in rows if "error" in row]
    if failed:
        return failed[0]
    if len(rows) == 1:
        return rows[0]
    merged = dict(rows[0])
    median = statistics.median(row["seconds_per_eval"] for row in rows)
    scale = rows[0]["seconds_per_eval"] / median
    merged["seconds_per_eval"] = median
    merged["gflops"] = rows[0]["gflops"] * scale
    if merged.get("fraction_of_matmul") is not None:
        merged["fraction_of_matmul"] = rows[0]["fraction_of_matmul"] * scale
    merged["round_seconds"] = [row["seconds_per_eval"] for row in rows]
    for key in ("peak_rss_bytes", "peak_gpu_bytes"):
        if key in merged:
            merged[key] = max(row[key] for row in rows)
    if merged.get("estimated_peak_bytes"):
        merged["estimate_error"] = merged["estimated_peak_bytes"] / _peak(merged) - 1
    return merged


if __name__ == "__main__":
    sys.exit(main())
