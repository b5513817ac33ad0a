"""optim.threads: scipy's bundled OpenBLAS runs L-BFGS-B on one thread, and gets its setting back."""
from __future__ import annotations

import importlib

import numpy as np
import pytest

from optim.threads import scipy_blas_threads, scipy_openblas


def _found():
    found = scipy_openblas()
    if found is None:
        pytest.skip("scipy here is not linked with its bundled OpenBLAS (MKL, Accelerate, a system BLAS): "
                    "nothing to limit")
    return found


def test_one_thread_inside_and_the_setting_restored():
    get, put = _found()
    put(2)
    with scipy_blas_threads(1) as before:
        assert get() == 1 and before == 2
    assert get() == 2
    with pytest.raises(RuntimeError):
        with scipy_blas_threads(1):
            raise RuntimeError("the setting comes back even on errors")
    assert get() == 2


def test_lbfgs_runs_with_one_scipy_thread(monkeypatch):
    """Inside optim.lbfgs's call of fmin_l_bfgs_b, scipy's BLAS has one thread."""
    get, put = _found()
    put(2)
    seen = []
    module = importlib.import_module("optim.lbfgs")      # the module (``optim.lbfgs`` is the function)
    real_minimize = module.fmin_l_bfgs_b

    def spy(*args, **kwargs):
        seen.append(get())
        return real_minimize(*args, **kwargs)

    monkeypatch.setattr(module, "fmin_l_bfgs_b", spy)

    class Quadratic:
        def __call__(self, x):
            from minivgg.transfer.objective import Evaluation
            d = x - 3.0
            loss = np.asarray((d * d).sum())
            return Evaluation(loss, np.asarray(0.0), np.asarray(0.0), loss, 2 * d)

    result = module.lbfgs(Quadratic(), np.zeros((1, 3, 4, 4)), 5)
    assert seen == [1] and get() == 2
    assert result.loss < 1e-10
