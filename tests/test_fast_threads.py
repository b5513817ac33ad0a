"""minivgg.fast.threads and the threaded Winograd bands (switch ``threads``): NumPy's BLAS on one thread
inside an evaluation and its setting back after, the bands dealt out evenly, every result equal to
the one-worker route, and a worker's failure stopping the others before the error comes back."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from gradcheck import channels_last_copy, rel_error
from minivgg.blas import bundled_openblas
from minivgg.fast import threads, winograd
from minivgg.fast.arrays import ArrayPool
from minivgg.fast.network import FastVGG19
from minivgg.fast.transforms import Transforms
from minivgg.transfer.objective import Objective
from minivgg.vgg import VGG19


@pytest.fixture
def numpy_blas():
    """(get, set) of NumPy's bundled OpenBLAS, its thread count restored after the test; skips without it."""
    found = bundled_openblas("numpy")
    if found is None:
        pytest.skip("NumPy here is not linked with its bundled OpenBLAS (MKL, Accelerate, a system BLAS): "
                    "there is no thread count to set, and the bands run on one worker")
    get, put = found
    before = get()
    yield get, put
    put(before)


def test_one_blas_thread_inside_nested_and_restored_on_errors(numpy_blas):
    get, put = numpy_blas
    put(3)
    with threads.one_blas_thread() as workers:
        assert workers == 3 and get() == 1
        with threads.one_blas_thread() as inner:              # nested: the outer count, no change
            assert inner == 3 and get() == 1
        assert get() == 1                                      # the inner block does not restore
    assert get() == 3
    with pytest.raises(RuntimeError):
        with threads.one_blas_thread():
            raise RuntimeError("the setting comes back on errors too")
    assert get() == 3
    with threads.one_blas_thread(enabled=False) as workers:   # off: one worker, the BLAS untouched
        assert workers == 1 and get() == 3
    put(1)
    with threads.one_blas_thread() as workers:                 # a one-thread BLAS: one worker
        assert workers == 1 and get() == 1
    assert get() == 1


def test_run_workers_runs_each_share_once_and_stops_the_others_on_a_failure():
    seen = []
    threads.run_workers(lambda k, stop: seen.append((k, threading.current_thread() is threading.main_thread())), 3)
    assert sorted(seen) == [(0, True), (1, False), (2, False)]      # share 0 on the caller's thread

    steps, running = [0, 0, 0], []

    def job(k, stop):
        running.append(k)
        if k == 1:
            time.sleep(0.05)
            raise ValueError("worker 1 fails")
        for _ in range(3000):                                  # the others: pieces of work until told
            if stop.is_set():
                running.remove(k)
                return
            steps[k] += 1
            time.sleep(0.001)
    with pytest.raises(ValueError, match="worker 1 fails"):
        threads.run_workers(job, 3)
    assert running == [1]                                      # 0 and 2 ended before the error came back
    assert steps[0] > 0 and steps[2] > 0


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_band_rows_deal_the_bands_out_evenly(workers):
    for c, o, h, m in ((64, 64, 512, 4), (256, 256, 128, 4), (512, 512, 64, 4), (512, 512, 32, 2), (3, 8, 9, 4)):
        th = -(-h // m)
        one = winograd.band_rows(c, o, h, h, m, 4, winograd.weights_bytes(o, c, m, 4))
        rows = winograd.band_rows(c, o, h, h, m, 4, winograd.weights_bytes(o, c, m, 4), workers=workers)
        assert rows <= one and winograd.worker_rows(th, rows, workers) == -(-th // workers), (c, h, rows)
    assert winograd.worker_rows(16, 5, 2) == 10 and winograd.worker_rows(16, 4, 2) == 8      # 5+5 | 5+1


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("backward", [False, True])
def test_threaded_bands_equal_one_worker(m, last, backward):
    """Float64, small bands (so several per worker, the last one short, the image cutting the tiles),
    batch 2: 2, 3 and 5 workers give the one-worker result (each band is the same arithmetic)."""
    rng = np.random.default_rng(7)
    c, o, h, w = 6, 5, 23, 18
    weights = winograd.prepare(rng.standard_normal((o, c, 3, 3)), m)
    b = None if backward else rng.standard_normal(o)
    cin = o if backward else c
    order = channels_last_copy if last else (lambda a: a)
    x = order(rng.standard_normal((2, cin, h, w)))
    kwargs = dict(backward=backward, relu=not backward, max_band_bytes=2048)
    want = winograd.conv3x3(x, weights, b, **kwargs)
    for workers in (2, 3, 5):
        pool = ArrayPool()
        got = winograd.conv3x3(x, weights, b, pool=pool, workers=workers, **kwargs)
        assert rel_error(got, want) < 1e-15, workers            # measured: 0 (the same products)


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("separable", [False, True])
def test_thin_bands_share_their_products_among_workers(monkeypatch, m, backward, separable):
    """Channels-last bands with fewer tiles than channels go in groups (``shared_products``): the
    products dealt out by xi nu, two and three workers, batch 2, an image the tiles overhang,
    a last group short of bands: the one-worker result (float64; measured: 3e-17, sums blocked otherwise)."""
    rng = np.random.default_rng(11)
    c, o, h, w = 24, 20, 21, 13
    weights = winograd.prepare(rng.standard_normal((o, c, 3, 3)), m)
    b = None if backward else rng.standard_normal(o)
    x = channels_last_copy(rng.standard_normal((2, o if backward else c, h, w)))
    kwargs = dict(backward=backward, relu=not backward, max_band_bytes=6000, separable=separable)
    want = winograd.conv3x3(x, weights, b, **kwargs)
    groups = []
    real = winograd._shared_bands
    monkeypatch.setattr(winograd, "_shared_bands", lambda *a: groups.append(a[-4]) or real(*a))   # workers
    for workers in (2, 3):
        got = winograd.conv3x3(x, weights, b, pool=ArrayPool(), workers=workers, **kwargs)
        assert rel_error(got, want) < 1e-16, workers
    assert groups == [2, 3]


def test_threaded_bands_take_what_the_memory_model_says():
    """One BandWork per worker from the pool's work buffer: ``temporary_bytes(..., workers)``."""
    rng = np.random.default_rng(2)
    c, o, h, w, m = 256, 256, 64, 64, 4
    weights = winograd.prepare(rng.standard_normal((o, c, 3, 3)).astype(np.float32), m)
    x = channels_last_copy(rng.standard_normal((1, c, h, w)).astype(np.float32))
    for workers in (1, 2, 3):
        pool = ArrayPool()
        out = winograd.conv3x3(x, weights, pool=pool, workers=workers)
        want = winograd.temporary_bytes(c, o, h, w, m, 4, workers=workers)
        taken = pool.nbytes - out.nbytes
        assert want <= taken <= want + 64 * (len(winograd.BandWork._fields) * workers + 1), (workers, taken, want)


@pytest.mark.parametrize("last", [False, True])
def test_the_workers_gram_is_the_whole_one(monkeypatch, last):
    """style_loss_forward with workers: G summed from each worker's run of positions, float64, equals
    the reference's G F F^T (measured: 2e-16, the sums' order), with each position in one run, so
    the loss and the cache's G - A follow; more workers than positions leaves none idle with nothing."""
    from losses.style import style_loss_forward as reference_loss
    from minivgg.fast import losses as fast_losses
    rng = np.random.default_rng(9)
    order = channels_last_copy if last else (lambda a: a)
    target = rng.standard_normal((1, 7, 7))
    runs = []
    real = fast_losses.run_workers
    monkeypatch.setattr(fast_losses, "run_workers", lambda job, n: runs.append(n) or real(job, n))
    for shape, workers in (((1, 7, 13, 11), 2), ((1, 7, 13, 11), 3), ((1, 7, 1, 2), 5)):
        f = order(np.maximum(rng.standard_normal(shape), 0))
        want, want_cache = reference_loss(f, target)
        got, cache = fast_losses.style_loss_forward(f, target, workers=workers)
        assert rel_error(cache.gram_diff, want_cache.gram_diff) < 1e-15 and rel_error(got, want) < 1e-15
        assert cache.f is f and cache.scale == want_cache.scale
    assert runs == [2, 3, 2]


def test_an_evaluation_with_threads_runs_its_bands_on_workers_and_one_blas_thread(vgg_params, numpy_blas,
                                                                                   monkeypatch):
    """Threads on, a 3-thread BLAS: each of the 12 Winograd convs (to conv5_1) gets 3 workers, forward
    and backward, while the BLAS has one thread; the evaluation equals the reference's to 1e-12
    (float64), and the BLAS has 3 threads after. Threads off: one worker, the BLAS untouched."""
    get, put = numpy_blas
    put(3)
    import minivgg.fast.conv as fast_conv
    import minivgg.fast.conv_backward as fast_conv_backward
    seen = []
    real = fast_conv.winograd_conv3x3

    def spy(*args, workers=1, **kwargs):
        seen.append((workers, get()))
        return real(*args, workers=workers, **kwargs)
    monkeypatch.setattr(fast_conv, "winograd_conv3x3", spy)                  # the forward's
    monkeypatch.setattr(fast_conv_backward, "winograd_conv3x3", spy)         # and the backward's
    rng = np.random.default_rng(5)
    content, style, x = (rng.normal(0, 30, (1, 3, 40, 28)) for _ in range(3))
    reference = Objective(VGG19(vgg_params, dtype="float64", engine="reference"), content, [style])
    want = reference(x)
    for switches, workers in ((Transforms(), 3), (Transforms().off("threads"), 1)):
        objective = Objective(VGG19(vgg_params, dtype="float64", transforms=switches), content, [style])
        seen.clear()
        got = objective(x)
        assert rel_error(got.grad, want.grad) < 1e-12 and abs(got.total_loss / want.total_loss - 1) < 1e-12
        assert len(seen) == 2 * 12 and set(seen) == {(workers, 1 if workers > 1 else 3)}, switches
        assert get() == 3
    assert FastVGG19(VGG19(vgg_params, dtype="float64").params, "avg", "cpu").band_workers == 3
    params = VGG19(vgg_params, dtype="float64").params
    assert FastVGG19(params, "avg", "gpu").band_workers == 1
    im2col = FastVGG19(params, "avg", "cpu", Transforms().off("winograd"))   # no bands: the BLAS keeps 3
    with im2col.workers() as workers:
        assert workers == 1 and get() == 3 and im2col.band_workers == 1
