"""``minivgg.image.find_border`` / ``trim_border``: a dark frame is found and cut, a picture without one is kept."""
import numpy as np
import pytest

from minivgg.image import FRAMED_SAMPLES, find_border, load_rgb, trim_border


def textured(h, w, seed=0):
    """A (h, w, 3) picture: smooth colour gradients plus texture, nowhere uniform or black."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([90 + 60 * yy, 110 + 40 * xx, 150 - 50 * yy * xx], axis=2)   # (h, w, 3)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255)


def framed(picture, black=(6, 8, 7, 9), edge=3, edge_colour=(235, 225, 195)):
    """``picture`` inside a cream canvas edge ``edge`` px wide, inside black bands (top, bottom, left, right)."""
    t, b, l, r = black
    h, w = picture.shape[:2]
    out = np.zeros((h + 2 * edge + t + b, w + 2 * edge + l + r, 3))
    out[t:t + h + 2 * edge, l:l + w + 2 * edge] = edge_colour
    out[t + edge:t + edge + h, l + edge:l + edge + w] = picture
    return out


def test_a_black_frame_and_canvas_edge_are_cut_to_the_picture():
    picture = textured(200, 260)
    image = framed(picture)
    top, bottom, left, right = find_border(image, pad=0)
    assert (top, bottom, left, right) == (6 + 3, 8 + 3, 7 + 3, 9 + 3)
    cropped, box = trim_border(image, pad=0)
    assert box == (top, bottom, left, right)
    np.testing.assert_array_equal(cropped, picture)


def test_pad_cuts_a_little_more_and_only_where_there_is_a_frame():
    image = np.concatenate([np.zeros((5, 300, 3)), textured(200, 300)], axis=0)   # black band on top only
    assert find_border(image) == (5 + 2, 0, 0, 0)
    assert find_border(image, pad=0) == (5, 0, 0, 0)


@pytest.mark.parametrize("seed", range(3))
def test_a_picture_without_a_frame_is_returned_unchanged(seed):
    picture = textured(180, 240, seed)
    cropped, box = trim_border(picture)
    assert box == (0, 0, 0, 0)
    assert cropped is picture


def test_a_uniform_bright_edge_is_not_a_frame():
    """An overcast sky (uniform, unlike the rest) on top is part of the photo: only a dark line starts a frame."""
    picture = textured(200, 260)
    picture[:40] = 200.0                                      # a flat, bright band on top
    assert find_border(picture) == (0, 0, 0, 0)


def test_a_dark_but_textured_edge_is_not_a_frame():
    picture = textured(200, 260)
    picture[:10] = np.random.default_rng(5).uniform(0, 70, (10, 260, 1))   # dark grey, not uniform
    assert find_border(picture)[0] == 0


def test_no_side_loses_more_than_max_fraction():
    image = framed(textured(100, 100), black=(30, 0, 0, 0), edge=0)   # 30 black rows on 130
    assert find_border(image, max_fraction=0.2)[0] == 26              # capped at 20 % of 130
    assert find_border(image, max_fraction=0.3, pad=0)[0] == 30


def test_uint8_input_and_shape_errors():
    image = framed(textured(120, 150)).astype(np.uint8)
    cropped, box = trim_border(image, pad=0)
    assert cropped.dtype == np.uint8 and cropped.shape == (120, 150, 3) and box == (9, 11, 10, 12)
    with pytest.raises(ValueError):
        find_border(np.zeros((50, 50)))


def test_the_starry_night_sample_loses_its_frame():
    from weights import samples
    assert "starry_night" in FRAMED_SAMPLES
    rgb, _ = load_rgb(samples.sample_path("starry_night"))   # (600, 752, 3), black and cream frame
    cropped, box = trim_border(rgb)
    assert all(8 <= b <= 30 for b in box), box              # black ~8 px + canvas edge, each side
    grey = cropped.mean(axis=2)
    for line in (grey[0], grey[-1], grey[:, 0], grey[:, -1]):   # no black line is left on any side
        assert line[len(line) // 10:-len(line) // 10].mean() > 40
    assert find_border(cropped) == (0, 0, 0, 0)              # trimming twice changes nothing more


def test_the_command_line_trims_only_when_asked_or_for_framed_samples(cli, tmp_path):
    """A user's framed image is left alone unless --trim-border; the framed sample is cut by default."""
    from PIL import Image
    path = tmp_path / "framed.png"
    Image.fromarray(framed(textured(40, 52)).astype(np.uint8)).save(path)
    cheap = ("--mode", "texture", "--style-layers", "conv1_1", "--size", "32", "--iters", "1")
    code, _, err = cli(*cheap, "--style", path, "--out", "a.png")
    assert code == 0 and "frame cut" not in err
    code, _, err = cli(*cheap, "--style", path, "--trim-border", "--out", "b.png")
    assert code == 0 and "note: style framed: frame cut:" in err   # capped at 10% of each side here
    code, _, err = cli(*cheap, "--out", "c.png")                      # the default style: starry_night
    assert code == 0 and "frame cut" in err
    code, _, err = cli(*cheap, "--no-trim-border", "--out", "d.png")
    assert code == 0 and "frame cut" not in err
