"""Soak test: does a long ``python -m minivgg.transfer`` run keep its memory flat?

    .venv/bin/python tests/soak_long_run.py --iters 2000 --size 64
    .venv/bin/python tests/soak_long_run.py --iters 300 --size 32 -- --style-layers conv1_1

Runs the command line in a child process on a synthetic photo (content and
style), with checkpoints every ``--save-every`` iterations into a temporary
folder, and reads the child's resident memory (VmRSS in /proc/<pid>/status,
no psutil) each time it prints a progress line: every iters/20 iterations.
It prints one row per sample, then the growth from the first sample at or
after ``--settle`` iterations (allocations of the first iterations: the array
pool, scipy's workspace) to the last one, and the least-squares slope over
those samples in MB per 1000 iterations. Exit status 1 if the growth passes
``--max-growth-mb``. Arguments after ``--`` go to the command line as they are.

Not collected by pytest (its name does not start with test_); the quick
version is ``tests/test_faults.py::test_memory_stays_flat_over_a_run``.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from photos import write_photo  # noqa: E402

PROGRESS = re.compile(r"^iter\s+(\d+)/(\d+)")
ESTIMATE = re.compile(r"estimated peak memory (\d+) MiB")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """``field`` (VmRSS: resident now, VmHWM: peak) of process ``pid`` in MB (2^20 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def sample_run(command, env) -> tuple:
    """Run ``command``; at each progress line read the child's RSS.

    Returns ([(iteration, MB)], peak MB, exit status, last stderr lines, the run's own
    memory estimate in MB or None).
    """
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=env)
    samples, tail, peak, estimate = [], [], [0.0], [None]

    def read():
        for line in child.stderr:
            tail[:] = (tail + [line.rstrip()])[-5:]
            found = ESTIMATE.search(line)
            if found:
                estimate[0] = int(found.group(1)) * 1.0
            match = PROGRESS.match(line)
            if match:
                try:
                    samples.append((int(match.group(1)), rss_mb(child.pid)))
                    peak[0] = rss_mb(child.pid, "VmHWM")
                except (OSError, KeyError):     # the child has just exited
                    pass

    reader = threading.Thread(target=read)
    reader.start()
    rc = child.wait()
    reader.join()
    child.stderr.close()
    return samples, peak[0], rc, tail, estimate[0]


def slope_per_1000(points) -> float:
    """Least-squares slope of MB against iteration, times 1000."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(i for i, _ in points) / n
    my = sum(m for _, m in points) / n
    sxx = sum((i - mx) ** 2 for i, _ in points)
    return 1000 * sum((i - mx) * (m - my) for i, m in points) / sxx if sxx else 0.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--settle", type=int, default=50,
                        help="iterations before the reference sample (default %(default)s)")
    parser.add_argument("--max-growth-mb", type=float, default=16.0)
    parser.add_argument("extra", nargs="*", help="more arguments for the command line (after --)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="minivgg-soak-") as tmp:
        photo = write_photo(Path(tmp) / "photo.png", width=96, height=72)
        command = [sys.executable, "-m", "minivgg.transfer", "--content", str(photo), "--style",
                   str(photo), "--size", str(args.size), "--iters", str(args.iters),
                   "--save-every", str(args.save_every), "--out", str(Path(tmp) / "out.png"),
                   *args.extra]
        began = time.monotonic()
        samples, peak, rc, tail, estimate = sample_run(command, dict(os.environ))
        seconds = time.monotonic() - began
        checkpoints = len(list(Path(tmp).glob("out.iter*.png")))
    print(f"command: {' '.join(command[1:])}")
    print(f"exit {rc} after {seconds:.0f} s; {checkpoints} checkpoints; peak RSS {peak:.1f} MB "
          f"(the run's estimate: {estimate} MB)")
    print("iteration   RSS MB")
    for iteration, mb in samples:
        print(f"{iteration:9d} {mb:8.1f}")
    settled = [(i, mb) for i, mb in samples if i >= args.settle]
    if rc != 0 or len(settled) < 2:
        print(f"not enough samples (exit {rc}): {' | '.join(tail)}")
        return 1
    growth = settled[-1][1] - settled[0][1]
    print(f"growth from iteration {settled[0][0]} to {settled[-1][0]}: {growth:+.1f} MB; "
          f"slope {slope_per_1000(settled):+.2f} MB per 1000 iterations")
    return 0 if growth <= args.max_growth_mb else 1


if __name__ == "__main__":
    sys.exit(main())
