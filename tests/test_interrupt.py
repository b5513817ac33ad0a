"""Stopping a run early: signals, checkpoints, resuming, and NaN or Inf in the objective.

The optimisers are checked on a small quadratic whose minimiser is known; the
command line is checked in-process where a monkeypatch can make the trouble
happen, and in a real subprocess for the signals (SIGINT, SIGTERM, SIGKILL),
which must come from outside the process to mean anything.
"""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

import minivgg.transfer.output as output_module
import minivgg.transfer.run as run_module
from minivgg.transfer.objective import Evaluation, Objective
from optim import adam, gradient_descent, lbfgs
from photos import write_photo

ERROR = "python -m minivgg.transfer: error: "
OPTIMISERS = {"lbfgs": lbfgs, "adam": adam, "gd": gradient_descent}


# ---------------------------------------------------------------- the optimisers, on a quadratic

class Quadratic:
    """L(x) = 1/2 sum d (x - t)^2 on (1, 3, 4, 5) float64, d from 1 to 100 (ill-conditioned, so
    no optimiser is done in a few steps); goes wrong from evaluation ``bad_at`` on.

    ``seen`` keeps (loss, x) of every finite evaluation, so the test knows the best point
    without asking the code under test.
    """

    def __init__(self, bad_at=None, trouble=float("nan")):
        self.target = np.random.default_rng(0).normal(size=(1, 3, 4, 5))
        self.d = np.geomspace(1.0, 100.0, 60).reshape(1, 3, 4, 5)
        self.bad_at, self.trouble, self.calls, self.seen = bad_at, trouble, 0, []

    def __call__(self, x):
        self.calls += 1
        diff = x - self.target
        loss, grad = 0.5 * float((self.d * diff * diff).sum()), self.d * diff
        if self.bad_at is not None and self.calls >= self.bad_at:
            if self.trouble is KeyboardInterrupt:
                raise KeyboardInterrupt
            if self.trouble == "grad":
                grad[0, 1, 2, 3] = np.inf
            else:
                loss = self.trouble
        if np.isfinite(loss) and np.isfinite(grad).all():
            self.seen.append((loss, x.copy()))
        return Evaluation(loss, loss, 0.0, loss, grad)


def start_point():
    return np.zeros((1, 3, 4, 5))


@pytest.mark.parametrize("name", sorted(OPTIMISERS))
@pytest.mark.parametrize("trouble", [float("nan"), float("inf"), "grad"])
def test_nan_stops_and_keeps_the_last_good_point(name, trouble):
    objective = Quadratic(bad_at=4, trouble=trouble)
    result = OPTIMISERS[name](objective, start_point(), 50)
    assert result.stopped == "not finite"
    best_loss, best_x = min(objective.seen, key=lambda seen: seen[0])
    assert result.loss == best_loss and np.isfinite(result.loss)
    assert np.array_equal(result.x, best_x)
    assert result.evaluations == 4 and len(objective.seen) == 3   # the 4th ran, and was not kept


@pytest.mark.parametrize("name", sorted(OPTIMISERS))
def test_nan_at_the_first_evaluation_has_no_good_point(name):
    result = OPTIMISERS[name](Quadratic(bad_at=1), start_point(), 50)
    assert result.stopped == "not finite" and result.loss == np.inf
    assert np.array_equal(result.x, start_point())     # the start, flagged by loss == inf


@pytest.mark.parametrize("name", sorted(OPTIMISERS))
def test_keyboard_interrupt_returns_the_best_point(name):
    objective = Quadratic(bad_at=5, trouble=KeyboardInterrupt)
    result = OPTIMISERS[name](objective, start_point(), 50)
    assert result.stopped == "interrupted"
    best_loss, best_x = min(objective.seen, key=lambda seen: seen[0])
    assert result.loss == best_loss and np.array_equal(result.x, best_x)


# ---------------------------------------------------------------- the command line, in-process

@pytest.fixture
def cli(cli, photo):
    """conftest's ``cli``, with photo.png in its working folder (CHEAP names it)."""
    return cli


CHEAP = ("--mode", "content", "--content-layer", "conv1_1", "--content", "photo.png", "--size", "16")


def nan_after(monkeypatch, good):
    """Make the run's objective return a NaN loss after ``good`` finite evaluations."""
    class NanAfter(Objective):
        calls = 0

        def __call__(self, x):
            ev = super().__call__(x)
            NanAfter.calls += 1
            return ev._replace(total_loss=float("nan")) if NanAfter.calls > good else ev

    monkeypatch.setattr(run_module, "Objective", NanAfter)


def test_cli_nan_keeps_the_last_good_image(cli, monkeypatch, tmp_path):
    nan_after(monkeypatch, good=4)
    code, out, err = cli(*CHEAP, "--iters", "50", "--out", "out.png")
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith(ERROR)]
    assert len(errors) == 1 and "Traceback" not in err
    assert re.fullmatch(rf"{re.escape(ERROR)}the loss or its gradient became NaN or Inf after \d+ "
                        r"iterations; stopped, and the last good image is in out\.png \(try .*\)", errors[0])
    assert out.strip() == "wrote out.png"
    assert np.asarray(Image.open(tmp_path / "out.png")).shape == (12, 16, 3)


def test_cli_nan_at_the_first_evaluation_writes_nothing(cli, monkeypatch, tmp_path):
    nan_after(monkeypatch, good=0)
    code, out, err = cli(*CHEAP, "--iters", "50", "--out", "out.png", "--quiet")
    assert code == 1 and out == ""
    assert err.startswith(f"{ERROR}the loss or its gradient was NaN or Inf at the first evaluation; "
                          f"no image written") and len(err.splitlines()) == 1
    assert not (tmp_path / "out.png").exists()


def test_interrupt_before_the_optimisation(cli, monkeypatch, tmp_path):
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "VGG19", ctrl_c)
    code, out, err = cli(*CHEAP, "--iters", "5", "--out", "out.png")
    assert code == 130
    assert err.strip() == (f"{ERROR}interrupted by SIGINT (Ctrl-C) before the optimisation started; "
                           f"nothing was written")
    assert not (tmp_path / "out.png").exists()


def test_a_signal_while_writing_the_result_does_not_cut_it_short(cli, monkeypatch, tmp_path):
    real_save = output_module.save_rgb

    def save_while_interrupted(rgb, path):
        os.kill(os.getpid(), signal.SIGINT)             # Ctrl-C again, during the final write
        return real_save(rgb, path)

    monkeypatch.setattr(output_module, "save_rgb", save_while_interrupted)
    code, out, err = cli(*CHEAP, "--iters", "2", "--out", "out.png")
    assert code == 0, err
    assert np.asarray(Image.open(tmp_path / "out.png")).shape == (12, 16, 3)


def first_loss(err):
    return float(re.search(r"iter +1/\d+ +evals +\d+ +loss (\S+)", err).group(1))


def test_resume_from_a_checkpoint(cli, tmp_path):
    code, _, err = cli(*CHEAP, "--iters", "10", "--save-every", "5", "--out", "run.png")
    assert code == 0, err
    checkpoint = tmp_path / "run.iter0010.png"
    assert (tmp_path / "run.iter0005.png").is_file() and checkpoint.is_file()
    code, _, resumed = cli(*CHEAP, "--iters", "1", "--init", checkpoint, "--out", "resumed.png")
    assert code == 0, resumed
    code, _, fresh = cli(*CHEAP, "--iters", "1", "--out", "fresh.png")
    assert code == 0, fresh
    assert first_loss(resumed) < first_loss(fresh) / 10


# ---------------------------------------------------------------- signals, in a real subprocess

class Transfer:
    """``python -m minivgg.transfer`` in a subprocess, its stderr read line by line as it comes."""

    def __init__(self, cwd, *argv):
        # A pytest started without job control (a background job of a script) has SIGINT
        # ignored, and its children would inherit that (the CLI keeps an ignored SIGINT
        # ignored, as Python does): handle it here for the moment of the start, so the child
        # gets the default.
        ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        if ignored:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "minivgg.transfer", *map(str, argv)], cwd=cwd, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        finally:
            if ignored:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.lines, self._queue = [], queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, ready, timeout=90):
        """Collect stderr until ready() is true; fail if the process ends or time runs out first."""
        deadline = time.monotonic() + timeout
        while not ready():
            try:
                line = self._queue.get(timeout=0.05)
            except queue.Empty:
                line = ""
            if line is None:
                pytest.fail("the run ended early:\n" + "".join(self.lines))
            self.lines.append(line)
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail("timed out; stderr so far:\n" + "".join(self.lines))

    def finish(self, timeout=60):
        out = self.proc.stdout.read()
        code = self.proc.wait(timeout=timeout)
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.lines.append(line)
        return code, out, "".join(self.lines)


ENDLESS = ("--mode", "texture", "--style", "photo.png", "--style-layers", "conv1_1", "conv2_1",
           "--size", "32", "--iters", "1000000", "--out", "out.png")


@pytest.mark.parametrize("signum, code, name", [(signal.SIGINT, 130, "SIGINT (Ctrl-C)"),
                                                (signal.SIGTERM, 143, "SIGTERM")])
def test_signal_writes_the_best_image_so_far(tmp_path, signum, code, name):
    write_photo(tmp_path / "photo.png")
    run = Transfer(tmp_path, *ENDLESS)
    run.wait_for(lambda: any(line.startswith("iter ") for line in run.lines))
    run.proc.send_signal(signum)
    exit_code, out, err = run.finish()
    assert exit_code == code, err
    assert out.strip() == "wrote out.png"
    errors = [line for line in err.splitlines() if line.startswith(ERROR)]
    assert len(errors) == 1 and "Traceback" not in err
    assert re.fullmatch(rf"{re.escape(ERROR)}interrupted by {re.escape(name)} after \d+ iterations; "
                        r"the best image so far is in out\.png", errors[0])
    with Image.open(tmp_path / "out.png") as png:
        png.verify()
    assert np.asarray(Image.open(tmp_path / "out.png")).shape == (24, 32, 3)


def test_checkpoints_survive_sigkill(tmp_path):
    write_photo(tmp_path / "photo.png")
    run = Transfer(tmp_path, *ENDLESS, "--save-every", "1")
    run.wait_for(lambda: (tmp_path / "out.iter0003.png").exists())
    run.proc.kill()                                       # SIGKILL: no handler, no cleanup
    run.finish()
    checkpoints = sorted(tmp_path.glob("out.iter*.png"))
    assert len(checkpoints) >= 3 and not (tmp_path / "out.png").exists()
    for path in checkpoints:                              # each one whole, never half-written
        with Image.open(path) as png:
            png.verify()
        assert np.asarray(Image.open(path)).shape == (24, 32, 3)
