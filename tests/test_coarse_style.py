"""--coarse-style: one painting styles the stages before the last, --style the last (scale control,
Gatys et al. 2017): what each stage optimises against, the plan, and the refusals."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import minivgg.transfer.run as run_module
from minivgg.transfer.cli import parse_args
from minivgg.transfer.common import UsageError
from minivgg.transfer.objective import Objective

ERROR = "python -m minivgg.transfer: error: "


def _flat_photo(path, rgb, size=(40, 30), seed=0):
    """A photo of one colour with a little noise (a Gram matrix that tells it apart), saved at path."""
    noise = np.random.default_rng(seed).normal(0, 8, (size[1], size[0], 3))
    Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("argv, message", [
    (["--coarse-style", "a.png"], "--coarse-style styles the early stages of a coarse-to-fine run: give "
                                  "--scales with two or more sizes (the last stage uses --style)"),
    (["--coarse-style", "a.png", "--scales", "64"], "give --scales with two or more sizes"),
    (["--coarse-style", "a.png", "--scales", "32", "64", "--mode", "content"],
     "--coarse-style needs a style term: not with --mode content"),
    (["--coarse-style", "a.png", "--scales", "32", "64", "--content-masks", "m.png"],
     "--coarse-style and --content-masks do not combine"),
])
def test_refused_where_it_has_no_meaning(argv, message):
    with pytest.raises(UsageError) as caught:
        parse_args(argv)
    assert message in str(caught.value)


def test_the_coarse_painting_styles_every_stage_but_the_last(cli, photo, tmp_path, monkeypatch):
    red = _flat_photo(tmp_path / "red.png", (220, 40, 40), size=(60, 20))
    blue = _flat_photo(tmp_path / "blue.png", (40, 40, 220), seed=1)
    seen = []

    class Recording(Objective):
        def __init__(self, net, content=None, styles=(), **kw):
            style = np.asarray(styles[0])[0]                     # (3, Hs, Ws), BGR minus the mean
            seen.append((tuple(style.shape[-2:]), "red" if style[2].mean() > style[0].mean() else "blue",
                         kw["style_blend"]))
            super().__init__(net, content, styles, **kw)

    monkeypatch.setattr(run_module, "Objective", Recording)
    code, _, err = cli("--content", photo, "--style", blue, "--coarse-style", red, "--scales", "32", "48", "64",
                       "--iters", "1", "--out", "o.png")
    assert code == 0, err
    # the coarse stages get the red painting resized to the content's size (the paper's rule), the last the blue
    assert seen == [((24, 32), "red", None), ((36, 48), "red", None), ((48, 64), "blue", None)]
    first = err.splitlines()[0]
    assert f"style {blue} ({red} in the stages before the last)" in first
    assert Image.open(tmp_path / "o.png").size == (64, 48)


def test_the_plan_sizes_each_stage_by_its_own_painting(cli, photo, tmp_path):
    """With --style-size the style images keep their own aspect ratios: a coarse stage's style sizes
    come from the coarse painting, the last stage's from --style."""
    from minivgg.transfer.inputs import plan
    wide = _flat_photo(tmp_path / "wide.png", (220, 40, 40), size=(80, 20))
    tall = _flat_photo(tmp_path / "tall.png", (40, 40, 220), size=(20, 40))
    config = parse_args(["--content", str(photo), "--style", str(tall), "--coarse-style", str(wide),
                         "--scales", "32", "64", "--style-size", "128", "--out", str(tmp_path / "o.png")])
    stages = plan(config).stages
    assert [(s.coarse, s.style_hws) for s in stages] == [(True, ((16, 64),)), (False, ((128, 64),))]
