"""minivgg.image.load_rgb / save_rgb on unreadable files and on unusual but valid images.

Every unreadable file must become one ImageError whose message names the file
and the problem; every valid image must come back as (H, W, 3) float64 RGB in
0..255, oriented as its EXIF says, with a note for each conversion. The
expected pixels are written down by hand (white under transparency, cyan from
CMYK, 65535 -> 255), not computed with the code under test.
"""
from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import minivgg.image as image
from minivgg.image import ImageError, load_rgb, save_rgb


def write_png16_rgb(path, a):
    """(H, W, 3) uint16 -> a 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[i].astype(">u2").tobytes() for i in range(h))

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def two_halves(width=40, height=30):
    """(height, width, 3) uint8: left half red, right half blue (orientation is visible)."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:, : width // 2] = (255, 0, 0)
    rgb[:, width // 2:] = (0, 0, 255)
    return rgb


# ---------------------------------------------------------------- unreadable files

def check_refused(path, problem):
    with pytest.raises(ImageError) as info:
        load_rgb(path, "content image")
    message = str(info.value)
    assert message.startswith(f"content image '{path}': "), message
    assert problem in message, message
    assert "\n" not in message


def test_missing_file(tmp_path):
    check_refused(tmp_path / "nope.jpg", "no such file")


def test_directory(tmp_path):
    check_refused(tmp_path, "is a directory")


def test_not_a_regular_file(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)                                      # opening it would block forever
    check_refused(fifo, "not a regular file")


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    check_refused(empty, "the file is empty")


def test_not_an_image(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a JPEG\n" * 10)
    check_refused(text, "not an image file")


def test_truncated_jpeg(tmp_path):
    whole = tmp_path / "whole.jpg"
    Image.fromarray((np.random.default_rng(0).random((64, 48, 3)) * 255).astype(np.uint8)).save(whole)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    check_refused(cut, "truncated or damaged")


def test_permission_denied_as_reported_by_os_access(tmp_path, monkeypatch):
    """The tests run as root, which bypasses permission bits, so a chmod 000 file would still
    be readable here. This checks the refusal path itself: os.access is made to answer
    'not readable' for this one file, as it does for an ordinary user on a chmod 000 file."""
    secret = tmp_path / "secret.png"
    Image.fromarray(two_halves()).save(secret)
    real_access = os.access
    monkeypatch.setattr(image.os, "access", lambda p, mode, *a, **k:
                        False if str(p) == str(secret) else real_access(p, mode, *a, **k))
    check_refused(secret, "permission denied")


def test_permission_denied_when_opening(tmp_path, monkeypatch):
    """os.access can say yes and open() still fail (ACLs, network file systems, a race):
    Pillow's PermissionError is reported the same way (simulated, for the reason above)."""
    photo = tmp_path / "photo.png"
    Image.fromarray(two_halves()).save(photo)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(photo))

    monkeypatch.setattr(image.Image, "open", denied)
    check_refused(photo, "permission denied")


# ---------------------------------------------------------------- unusual but valid images

def load(path):
    rgb, notes = load_rgb(path, "image")
    assert rgb.dtype == np.float64 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.min() >= 0 and rgb.max() <= 255
    return rgb, notes


def test_grayscale(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(np.full((5, 7), 77, np.uint8), mode="L").save(path)
    rgb, notes = load(path)
    assert rgb.shape == (5, 7, 3) and np.all(rgb == 77)
    assert any("grayscale" in n for n in notes)


def test_palette(tmp_path):
    path = tmp_path / "palette.png"
    img = Image.new("P", (6, 4))
    img.putpalette([10, 20, 30] + [200, 100, 0] * 255)
    img.putpixel((0, 0), 1)
    img.save(path)
    rgb, _ = load(path)
    assert rgb.shape == (4, 6, 3)
    assert tuple(rgb[0, 0]) == (200, 100, 0) and tuple(rgb[1, 1]) == (10, 20, 30)


def test_palette_with_transparency_is_flattened_onto_white(tmp_path):
    path = tmp_path / "palette_t.png"
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0] + [0, 255, 0] * 255)
    img.putpixel((3, 3), 1)
    img.save(path, transparency=0)                          # index 0 (black) is transparent
    rgb, notes = load(path)
    assert tuple(rgb[0, 0]) == (255, 255, 255) and tuple(rgb[3, 3]) == (0, 255, 0)
    assert any("transparency flattened onto white" in n for n in notes)


def test_rgba_is_flattened_onto_white(tmp_path):
    path = tmp_path / "rgba.png"
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)                           # opaque red stays red
    rgba[0, 1] = (255, 0, 0, 0)                             # transparent: white
    rgba[0, 2] = (0, 0, 0, 128)                             # half black over white: 255 * 127/255
    Image.fromarray(rgba, mode="RGBA").save(path)
    rgb, notes = load(path)
    assert tuple(rgb[0, 0]) == (255, 0, 0)
    assert tuple(rgb[0, 1]) == (255, 255, 255)
    assert np.allclose(rgb[0, 2], 127, atol=1)
    assert any("transparency flattened onto white" in n for n in notes)


def test_opaque_rgba_gets_no_transparency_note(tmp_path):
    path = tmp_path / "opaque.png"
    Image.fromarray(np.full((3, 3, 4), 255, np.uint8), mode="RGBA").save(path)
    _, notes = load(path)
    assert not any("transparency" in n for n in notes)


def test_cmyk(tmp_path):
    path = tmp_path / "cmyk.jpg"
    cmyk = np.zeros((8, 8, 4), np.uint8)
    cmyk[..., 0] = 255                                      # pure cyan ink: RGB (0, 255, 255)
    Image.fromarray(cmyk, mode="CMYK").save(path, quality=100)
    rgb, notes = load(path)
    assert rgb.shape == (8, 8, 3)
    assert np.allclose(rgb.mean(axis=(0, 1)), (0, 255, 255), atol=4)
    assert any("CMYK" in n for n in notes)


def test_16_bit_grayscale_png(tmp_path):
    path = tmp_path / "gray16.png"
    a = np.array([[0, 257 * 100, 65535]], np.uint16)        # 8-bit 0, 100, 255
    Image.fromarray(a).save(path)
    rgb, notes = load(path)
    assert rgb.shape == (1, 3, 3)
    assert np.allclose(rgb[0, :, 0], (0, 100, 255)) and np.all(rgb[..., 0] == rgb[..., 2])
    assert any("16-bit" in n for n in notes)


def test_dark_16_bit_grayscale_is_still_scaled(tmp_path):
    """A 16-bit image whose samples are all <= 255 is very dark, not 8-bit: it stays dark."""
    path = tmp_path / "dark16.png"
    Image.fromarray(np.full((2, 2), 255 * 2, np.uint16)).save(path)
    rgb, _ = load(path)
    assert np.allclose(rgb, 510 / 257)


def test_16_bit_rgb_png(tmp_path):
    a = np.zeros((5, 7, 3), np.uint16)
    a[..., 0], a[..., 1], a[..., 2] = 65535, 257 * 100, 0
    rgb, _ = load(write_png16_rgb(tmp_path / "rgb16.png", a))
    assert rgb.shape == (5, 7, 3)
    assert np.allclose(rgb[0, 0], (255, 100, 0))


@pytest.mark.parametrize("orientation, shape, top_left, bottom_right", [
    (1, (30, 40, 3), "red", "blue"),        # as stored
    (3, (30, 40, 3), "blue", "red"),        # rotate 180
    (6, (40, 30, 3), "red", "blue"),        # rotate 90 clockwise: the left half goes to the top
    (8, (40, 30, 3), "blue", "red"),        # rotate 90 counter-clockwise: the left half goes down
])
def test_exif_orientation_is_applied(tmp_path, orientation, shape, top_left, bottom_right):
    path = tmp_path / f"exif{orientation}.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(two_halves(40, 30)).save(path, exif=exif, quality=95)
    rgb, notes = load(path)
    assert rgb.shape == shape
    colours = {"red": (255, 0, 0), "blue": (0, 0, 255)}
    assert np.allclose(rgb[2, 2], colours[top_left], atol=40)
    assert np.allclose(rgb[-3, -3], colours[bottom_right], atol=40)
    assert any("EXIF orientation" in n for n in notes) == (orientation != 1)


def test_first_frame_of_an_animation(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    rgb, notes = load(path)
    assert np.allclose(rgb[0, 0], (255, 0, 0), atol=2)
    assert any("animated or multi-page image: its first frame is used" in n for n in notes)


# ---------------------------------------------------------------- writing

def test_save_rgb_writes_a_complete_png_and_no_temporary_file(tmp_path):
    rgb = two_halves()
    out = save_rgb(rgb, tmp_path / "out.png")
    assert np.array_equal(np.asarray(Image.open(out)), rgb)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_save_rgb_failing_midway_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    out = tmp_path / "out.png"
    save_rgb(two_halves(), out)
    before = out.read_bytes()

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(image.Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        save_rgb(np.zeros((30, 40, 3), np.uint8), out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
