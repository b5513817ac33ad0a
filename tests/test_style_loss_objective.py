"""--style-loss: the style statistics of ``losses.statistics`` inside the objective, on both engines
and through the command (the losses' own gradient checks are in test_style_statistics.py)."""
from __future__ import annotations

import numpy as np
import pytest

import weights
from gradcheck import directional_check, rel_error
from losses.statistics import STYLE_STATISTICS
from minivgg.transfer.cli import parse_args
from minivgg.transfer.common import UsageError
from minivgg.transfer.objective import Objective
from minivgg.vgg import VGG19

LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


@pytest.fixture(scope="module")
def nets():
    params = weights.untrained_vgg19(seed=0)
    return {engine: VGG19(params, dtype="float64", engine=engine) for engine in ("reference", "fast")}


def _images(seed):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 20, (1, 3, 40, 56)), rng.normal(0, 40, (1, 3, 40, 56)),
            [rng.normal(0, 40, (1, 3, 48, 64)), rng.normal(10, 30, (1, 3, 32, 40))])


@pytest.mark.parametrize("name", sorted(STYLE_STATISTICS))
def test_engines_agree_for_every_statistic(nets, name):
    """Two style images of other sizes, blended 0.7/0.3, conv4_2 content: fast = reference to rounding."""
    x, content, styles = _images(1)
    evs = {engine: Objective(net, content, styles, alpha=1e-3, style_layers=LAYERS, style_blend=(0.7, 0.3),
                             style_loss=name)(x) for engine, net in nets.items()}
    fast, ref = evs["fast"], evs["reference"]
    assert abs(float(fast.style_loss) / float(ref.style_loss) - 1) < 1e-12
    assert abs(float(fast.total_loss) / float(ref.total_loss) - 1) < 1e-12
    assert rel_error(fast.grad, ref.grad) < 1e-12


@pytest.mark.parametrize("name, layers", [("mean-std", LAYERS), ("mmd-rbf", LAYERS),
                                         ("sliced-wasserstein", ("conv4_1", "conv5_1"))])
def test_the_objectives_gradient_for_a_statistic(nets, name, layers):
    """The whole objective's gradient with respect to the pixels (the statistic's backward through
    the network), against a centred difference, float64. Sliced Wasserstein's sort makes its loss
    piecewise quadratic: a step that crosses a tie between two projections changes which target
    each is compared with (measured: 1.3e-4 at the five paper layers, whose 2,240 conv1_1 positions
    give many near-ties); on the deep layers alone (35 and 6 positions) no step crosses one, and the
    gradient still runs back through the whole network."""
    x, content, styles = _images(2)
    objective = Objective(nets["reference"], content, styles[:1], alpha=1e-6, style_layers=layers,
                          style_loss=name)
    grad = objective(x).grad
    worst = directional_check(lambda z: objective(z).total_loss, x, grad, np.random.default_rng(3), h=1e-3)
    print(f"{name}: worst relative error {worst:.1e}")
    assert worst < 1e-6, worst              # measured: 5.6e-8 mean-std, 2.2e-7 mmd-rbf, 3.5e-9 sliced W.


def test_mmd_poly_is_the_gram_objective(nets):
    """One style image of x's size: the paper's objective (its raw Gram A) and the polynomial MMD are one.
    (With styles of other sizes or several styles they differ: the MMD compares per-position
    averages and adds the styles' losses, the paper's objective sums over the style's positions
    and blends the Grams.)"""
    x, content, styles = _images(4)
    style = styles[0][:, :, :40, :56]
    gram, poly = (Objective(nets["fast"], content, [style], style_layers=LAYERS, style_loss=name)(x)
                  for name in ("gram", "mmd-poly"))
    assert abs(float(poly.total_loss) / float(gram.total_loss) - 1) < 1e-12
    assert rel_error(poly.grad, gram.grad) < 1e-12


def test_blended_styles_add_their_losses(nets):
    x, content, styles = _images(5)
    one = [Objective(nets["reference"], None, [s], style_layers=LAYERS, style_loss="mean-std")(x).style_loss
           for s in styles]
    both = Objective(nets["reference"], None, styles, style_layers=LAYERS, style_loss="mean-std",
                     style_blend=(0.25, 0.75))(x).style_loss
    assert abs(float(both) - (0.25 * float(one[0]) + 0.75 * float(one[1]))) < 1e-12 * float(both)


def test_spatial_control_stays_with_gram(nets):
    x, content, styles = _images(6)
    with pytest.raises(ValueError, match="spatial control uses guided Gram matrices"):
        Objective(nets["reference"], content, styles[:1], content_masks=[np.ones((40, 56))],
                  style_loss="sliced-wasserstein")


def test_the_option_and_its_refusals():
    assert parse_args([]).objective.style_loss == "gram"
    config = parse_args(["--style-loss", "mean-std"])
    assert config.objective.style_loss == "mean-std" and config.objective.alpha == 1e-7   # its own ratio
    assert parse_args(["--style-loss", "mean-std", "--ratio", "3e-6"]).objective.alpha == 3e-6
    assert parse_args(["--style-loss", "mmd-rbf", "--mode", "texture"]).objective.style_loss == "mmd-rbf"
    for argv, message in ((["--style-loss", "mean-std", "--mode", "content"],
                           "--style-loss mean-std: --mode content has no style term"),
                          (["--style-loss", "mmd-rbf", "--content-masks", "m.png"],
                           "--content-masks match guided Gram matrices: not with --style-loss mmd-rbf")):
        with pytest.raises(UsageError) as caught:
            parse_args(argv)
        assert str(caught.value) == message


@pytest.mark.parametrize("mode", ["transfer", "texture"])
def test_the_command_runs_each_statistic(cli, photo, tmp_path, mode):
    for name in STYLE_STATISTICS:
        code, _, err = cli("--content", photo, "--style", photo, "--mode", mode, "--size", "32", "--iters", "2",
                           "--style-loss", name, "--out", f"{name}.png")
        assert code == 0, err
        first = err.splitlines()[0]
        assert (f"matched by {name}" in first) == (name != "gram")
        assert (tmp_path / f"{name}.png").exists()


def test_a_bad_choice_is_one_line(cli):
    code, out, err = cli("--style-loss", "wasserstein")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "argument --style-loss: invalid choice: 'wasserstein'" in err
