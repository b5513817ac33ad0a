"""Images in and out of the network's input space, and on and off the disk.

    rgb: (H, W, 3) RGB, 0..255 float64 (or uint8)
    x:   (1, 3, H, W) BGR, 0..255 scale, MEAN_BGR subtracted (``minivgg.network_input``, Caffe VGG)

This is an I/O boundary: it works on NumPy arrays (a CuPy ``x`` is copied to
the host by ``net_to_rgb``). Every problem reading a file becomes one
``ImageError`` whose one-line message names the file and the problem.

Hostile files (``tests/test_faults.py``): an image declaring more than
``MAX_PIXELS`` pixels is refused from its header, before any pixel is decoded
(a decompression bomb is a few hundred bytes declaring 100000 x 100000); a
truncated stream is refused when decoding reaches its end; of an animated or
multi-page image the first frame is used, with a note. Decoding costs about
``DECODE_BYTES_PER_PIXEL`` bytes per pixel of the file, whatever the output size.
"""
from __future__ import annotations

import errno
import os
import time
import warnings
from glob import escape as glob_escape
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# The network's input convention (minivgg.network_input), imported here because images are turned
# into network inputs and back through this module.
from minivgg.architecture import MEAN_BGR  # noqa: F401
from minivgg.network_input import net_to_rgb, pixel_bounds, rgb_to_net  # noqa: F401

#: Largest image ``load_rgb`` decodes: 2**26 pixels (8192 x 8192; a 61-megapixel camera's
#: 9504 x 6336 fits). Pillow's own guard (``Image.MAX_IMAGE_PIXELS``, 89 Mpx, an error only
#: past twice that) is left alone: this one is lower and is checked from the header.
MAX_PIXELS = 2**26
#: Peak memory of ``load_rgb`` per pixel of the file, an upper bound: Pillow's decoded image
#: (4 bytes) is freed once copied to uint8 (3), then the float64 (H, W, 3) result (24) is made;
#: measured 27.1 for RGB PNG and JPEG, 30.1 for RGBA PNG (``tests/test_faults.py`` checks it).
DECODE_BYTES_PER_PIXEL = 32


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file and why."""


def _to_rgb_array(img: Image.Image, notes: list) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) RGB in 0..255, uint8 from 8-bit modes, else float64.

    ``notes`` says what was changed. The 8-bit result stays uint8 so that the
    caller can let go of Pillow's copy (4 bytes per pixel) before making the
    float64 one (24 bytes per pixel).
    """
    if img.mode.startswith("I;16"):                                  # 16-bit grayscale
        notes.append("16-bit grayscale scaled to 8-bit range and used as RGB")
        a = np.asarray(img, dtype=np.float64) / 257.0                 # 65535 -> 255
        return np.repeat(np.clip(a, 0, 255)[:, :, None], 3, axis=2)
    if img.mode == "I":                                              # 32-bit integer samples
        a = np.asarray(img, dtype=np.float64)
        if a.max() > 255:
            a = a / 257.0
            notes.append("16-bit samples scaled to 8-bit range")
        notes.append("grayscale used as RGB")
        return np.repeat(np.clip(a, 0, 255)[:, :, None], 3, axis=2)
    if img.mode == "F":
        notes.append("floating-point grayscale clipped to 0..255 and used as RGB")
        a = np.clip(np.asarray(img, dtype=np.float64), 0, 255)
        return np.repeat(a[:, :, None], 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:                           # some pixel is not opaque
            notes.append("transparency flattened onto white")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    if img.mode == "CMYK":
        notes.append("CMYK converted to RGB")
    if img.mode in ("1", "L"):
        notes.append("grayscale used as RGB")
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))


_EXIF_ORIENTATION = 0x0112
_ORIENTATION_WORDS = {2: "mirrored", 3: "rotated 180 degrees", 4: "flipped", 5: "transposed",
                      6: "rotated 90 degrees", 7: "transversed", 8: "rotated 270 degrees"}


def _check_readable(path: Path, label: str) -> None:
    """Refuse, with one message, a path that is missing, not a regular file, unreadable or empty."""
    if not path.exists():
        raise ImageError(f"{label}: no such file")
    if path.is_dir():
        raise ImageError(f"{label}: is a directory, not an image file")
    if not path.is_file():                                          # a FIFO would block, a device never ends
        raise ImageError(f"{label}: not a regular file")
    if not os.access(path, os.R_OK):
        raise ImageError(f"{label}: permission denied (cannot read the file)")
    if path.stat().st_size == 0:
        raise ImageError(f"{label}: the file is empty")


def _check_pixels(img: Image.Image, label: str) -> None:
    """Refuse, from the header alone, an image of more than ``MAX_PIXELS`` pixels."""
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise ImageError(f"{label}: {width}x{height} pixels is more than the {MAX_PIXELS:,} (8192x8192) "
                         f"minivgg decodes, a guard against decompression bombs (it would take about "
                         f"{DECODE_BYTES_PER_PIXEL * width * height / 2**30:.1f} GiB to decode); "
                         f"shrink the image first, e.g. to 4096 pixels on its long side")


def _decode(path: Path, label: str, notes: list) -> np.ndarray:
    """Open, fully decode, orient and convert one image file; Pillow's own errors pass through."""
    with Image.open(path) as img:
        _check_pixels(img, label)
        animated = getattr(img, "is_animated", False)              # looks at frame 2 only, not all
        img.load()                                                  # decode now: truncation shows here
        try:
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
            oriented = ImageOps.exif_transpose(img)
        except Exception as exc:  # damaged EXIF: the pixels are still good
            orientation, oriented = 1, img
            notes.append(f"EXIF data unreadable, orientation ignored ({type(exc).__name__})")
        if orientation in _ORIENTATION_WORDS:
            notes.append(f"{_ORIENTATION_WORDS[orientation]} as its EXIF orientation ({orientation}) says")
        if animated:
            notes.append("animated or multi-page image: its first frame is used")
        return _to_rgb_array(oriented, notes)


def _one_line(message: str) -> str:
    """``message`` with its line breaks turned into spaces (Pillow's messages may hold some)."""
    return message.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def load_rgb(path, what="image") -> tuple[np.ndarray, list]:
    """Read ``path`` as (H, W, 3) float64 RGB 0..255, EXIF orientation applied.

    Returns (rgb, notes): notes say what was changed on the way (transparency
    flattened onto white, CMYK or 16-bit converted, rotated by EXIF, first frame
    of an animation, Pillow's warnings). Raises ImageError "<what> 'path':
    <problem>" (one line) for a missing file, a directory, no permission, an
    empty, truncated, damaged or non-image file, or more than ``MAX_PIXELS``.
    """
    path = Path(path)
    label = f"{what} '{path}'"
    _check_readable(path, label)
    notes = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rgb = _decode(path, label, notes)                     # the file is closed here
        rgb = np.asarray(rgb, dtype=np.float64)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image file (Pillow cannot identify its format)") from None
    except PermissionError:
        raise ImageError(f"{label}: permission denied (cannot read the file)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(_one_line(f"{label}: too many pixels to decode safely ({exc}); shrink the "
                                   f"image first, e.g. to 4096 pixels on its long side")) from None
    except MemoryError:
        raise ImageError(f"{label}: not enough memory to decode the image") from None
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ImageError(f"{label}: permission denied (cannot read the file)") from None
        raise ImageError(_one_line(f"{label}: the file is truncated or damaged ({exc})")) from None
    except Exception as exc:  # a damaged file can make any of Pillow's decoders fail
        raise ImageError(_one_line(f"{label}: cannot decode the image "
                                   f"({type(exc).__name__}: {exc})")) from None
    notes += [_one_line(f"Pillow warned: {w.message}") for w in caught]
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ImageError(f"{label}: the image has no pixels")
    return rgb, notes


def resize_rgb(rgb, height: int, width: int) -> np.ndarray:
    """Resize (H, W, 3) float RGB to (height, width, 3) with Pillow's bicubic filter, per channel in float."""
    if rgb.shape[:2] == (height, width):
        return np.asarray(rgb, dtype=np.float64)
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(rgb[:, :, c], dtype=np.float32))
                           .resize((width, height), Image.BICUBIC)) for c in range(3)]
    return np.clip(np.stack(channels, axis=2).astype(np.float64), 0, 255)


def fit_long_side(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) scaled so that max(h, w) == long_side, aspect kept, each at least 1."""
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def save_rgb(rgb_uint8, path) -> Path:
    """Write (H, W, 3) uint8 RGB as PNG, completely or not at all; returns the path.

    The PNG goes to a hidden temporary file ``.<name>.<pid>.tmp`` in the same
    folder, is flushed to the disk, then renamed over ``path`` (atomic on
    POSIX): a reader, or a process killed mid-write, never sees a partial file
    at ``path``. What a killed writer left is removed by the next save of the
    same name (``_remove_abandoned``).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            Image.fromarray(np.ascontiguousarray(rgb_uint8, dtype=np.uint8)).save(f, format="PNG")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _remove_abandoned(path)
    return path


#: A temporary file of ``save_rgb`` older than this whose process is gone was abandoned (the age
#: guards a writer in another PID namespace, e.g. another container sharing the folder).
ABANDONED_AFTER_S = 600


def _remove_abandoned(path: Path) -> None:
    """Remove ``.<path name>.<pid>.tmp`` files of processes that no longer exist, if old enough."""
    prefix = f".{path.name}."
    for entry in path.parent.glob(f"{glob_escape(prefix)}*.tmp"):
        pid = entry.name[len(prefix):-len(".tmp")]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            if time.time() - entry.stat().st_mtime > ABANDONED_AFTER_S:
                entry.unlink()
        except OSError:                                # gone already, or not ours to remove
            pass


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 probes without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:                            # exists, owned by someone else
        return True
    return True


#: Samples whose file carries a frame around the picture, cropped by ``trim_border`` when loaded
#: as samples (a user's own image is left as it is unless asked for).
FRAMED_SAMPLES = ("starry_night",)


def find_border(rgb, *, dark=40.0, uniform_std=12.0, tolerance=25.0, max_fraction=0.1, pad=2):
    """Widths (top, bottom, left, right) in pixels of a dark frame around (H, W, 3) ``rgb``; 0 where none.

    A side has a frame when its outermost line of pixels is dark and uniform: mean grey value
    below ``dark`` and standard deviation along the line below ``uniform_std`` (0..255 scale).
    From there the frame runs inward while a line's mean colour is more than ``tolerance``
    (RGB, Euclidean) away from the picture's, the median line colour of the band just past the
    most that may be cut (from ``max_fraction`` to twice that of the size inside). This takes
    in the black mount and the bright, unevenly cut canvas edge after it (The Starry Night of OpenCV's samples has both: about 8 px of black, then a
    cream edge fading into the paint over another 8 to 15 px). Each line is averaged over its
    central 80 %, away from the other sides' frames. A found frame is widened by ``pad`` pixels
    (the canvas edge is not straight) and no side loses more than ``max_fraction`` of its size.
    A photo whose edge is not a dark uniform line (sky, a wall) is never cropped.
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    widths = []
    for side in ("top", "bottom", "left", "right"):
        a = {"top": rgb, "bottom": rgb[::-1], "left": rgb.transpose(1, 0, 2),
             "right": rgb.transpose(1, 0, 2)[::-1]}[side]          # (lines, length, 3), edge first
        lines, length = a.shape[:2]
        cap = int(max_fraction * lines)
        lo, hi = int(0.1 * length), max(int(0.1 * length) + 1, int(0.9 * length))
        if cap < 1 or 2 * cap > lines:
            widths.append(0)
            continue
        colour = a[:, lo:hi].mean(axis=1)                           # (lines, 3) mean colour per line
        grey_std = a[0, lo:hi].mean(axis=1).std()                   # spread along the outermost line
        reference = np.median(colour[cap:2 * cap], axis=0)         # (3,) the picture's colour, past the cap
        far = np.linalg.norm(colour - reference, axis=1) > tolerance   # (lines,)
        if a[0, lo:hi].mean() >= dark or grey_std >= uniform_std or not far[0]:
            widths.append(0)
            continue
        width = int(np.argmin(far[:cap])) if not far[:cap].all() else cap
        widths.append(min(width + pad, cap))
    return tuple(widths)


def trim_border(rgb, **options):
    """(H, W, 3) ``rgb`` without the frame ``find_border`` finds; the image itself if it finds none.

    Returns (cropped, (top, bottom, left, right)). ``options`` go to ``find_border``.
    """
    top, bottom, left, right = find_border(rgb, **options)
    if not (top or bottom or left or right):
        return rgb, (0, 0, 0, 0)
    h, w = np.shape(rgb)[:2]
    return rgb[top:h - bottom, left:w - right], (top, bottom, left, right)
