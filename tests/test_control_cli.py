"""The perceptual controls at the command line (--content-masks, --style-masks, --preserve-color
luminance|histogram, --style-size, --content-layers): tiny runs that work, and refusals that are one
line, exit status 2, with nothing computed or written."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import minivgg.transfer.run as run_module
from photos import write_photo

ERROR = "python -m minivgg.transfer: error: "
TINY = ("--size", "32", "--iters", "2", "--style-layers", "conv1_1", "conv2_1", "--content-layer", "conv2_2")


def one_error_line(err: str) -> str:
    """The only line on stderr, which must be an error line (no traceback, no usage dump)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(ERROR), err
    return lines[0][len(ERROR):]


def _mask(path, height, width, left=True):
    """A 0/255 greyscale mask of the left (or right) half, saved at ``path``."""
    a = np.zeros((height, width), np.uint8)
    a[:, : width // 2] = 255
    Image.fromarray(a if left else 255 - a, mode="L").save(path)
    return str(path)


@pytest.fixture
def nothing_computed(monkeypatch):
    """Fails the test if a network is built: refusals come before any work."""
    def must_not_run(*args, **kwargs):
        raise AssertionError("a network was built before the refusal")
    monkeypatch.setattr(run_module, "VGG19", must_not_run)


def test_two_styles_by_masks_run_and_a_resized_mask_is_noted(cli, photo, tmp_path):
    style2 = write_photo(tmp_path / "style2.png", seed=5)
    left = _mask(tmp_path / "left.png", 60, 80)                     # twice the photo's 40x30: resized
    right = _mask(tmp_path / "right.png", 30, 40, left=False)
    code, out, err = cli(*TINY, "--content", photo, "--style", photo, style2, "--content-masks", left, right,
                         "--style-masks", "all", right, "--out", "out.png")
    assert code == 0, err
    assert f"note: content mask 1 '{left}': resized from 80x60 to its image's 40x30 pixels" in err
    assert "2 content masks and style masks" in err and out.strip() == "wrote out.png"


@pytest.mark.parametrize("case, message", [
    ("count", "--content-masks has 1 masks for 2 style images: give one per style image, in the same order"),
    ("empty", "content mask 2 '{path}': the mask is empty (all black): it must be white where its style applies"),
    ("not an image", "content mask 2 '{path}': not an image file"),
    ("aspect", "content mask 2 '{path}': the mask is 30x30 pixels, its image 40x30"),
    ("style mask count", "--style-masks has 3 masks for 2 style images"),
])
def test_bad_masks_are_one_line_exit_2(cli, photo, tmp_path, nothing_computed, case, message):
    left = _mask(tmp_path / "left.png", 30, 40)
    second = tmp_path / "second.png"
    if case == "empty":
        Image.fromarray(np.zeros((30, 40), np.uint8), mode="L").save(second)
    elif case == "not an image":
        second.write_text("these are words")
    elif case == "aspect":
        _mask(second, 30, 30)
    else:
        _mask(second, 30, 40, left=False)
    masks = [left] if case == "count" else [left, str(second)]
    extra = ["--style-masks", "all", "all", "all"] if case == "style mask count" else []
    code, out, err = cli(*TINY, "--content", photo, "--style", photo, photo, "--content-masks", *masks,
                         *extra, "--out", "out.png")
    assert code == 2 and out == ""
    assert one_error_line(err).startswith(message.format(path=second)), err
    assert not (tmp_path / "out.png").exists()


def test_histogram_colour_style_size_and_content_layers_run(cli, photo, tmp_path):
    code, _, err = cli(*TINY[:4], "--style-layers", "conv1_1", "conv2_1", "--content", photo,
                       "--style", photo, "--preserve-color", "histogram", "--style-size", "24",
                       "--content-layers", "conv2_2", "conv3_1:0.5", "--out", "out.png")
    assert code == 0, err
    assert "content layer conv2_2,conv3_1:0.5" in err and "colours kept (histogram)" in err
    assert np.asarray(Image.open(tmp_path / "out.png")).shape == (24, 32, 3)


@pytest.mark.parametrize("argv, message", [
    (("--content-layer", "conv4_2", "--content-layers", "conv4_2"), "give --content-layer or --content-layers"),
    (("--content-layers", "conv4_2", "conv9_1"), "--content-layers: unknown layer 'conv9_1'"),
    (("--style-size", "64", "--style-scale", "2"), "give --style-size or --style-scale, not both"),
    (("--preserve-color", "hue"), "argument --preserve-color: invalid choice: 'hue'"),
    (("--style-masks", "a.png"), "--style-masks needs --content-masks"),
    (("--content-masks", "a.png", "--style-blend", "1"), "--style-blend mixes the styles everywhere"),
])
def test_bad_control_options_are_one_line_exit_2(cli, photo, argv, message, nothing_computed):
    code, out, err = cli("--content", photo, "--style", photo, *argv)
    assert code == 2 and out == ""
    assert one_error_line(err).startswith(message), err


def test_style_size_too_small_for_the_layers(cli, photo, nothing_computed):
    code, _, err = cli("--content", photo, "--style", photo, "--style-size", "12", "--size", "32")
    assert code == 2
    assert one_error_line(err).startswith("style image 1 would be 12x9 pixels, too small for conv5_1"), err
