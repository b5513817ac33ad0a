"""Qt resource bundles (``.rcc``) and GCompris' jigsaw boards, read in plain Python.

GCompris keeps its pictures in Qt resource bundles. The format (big-endian) is:

    header   b"qres", u32 version, u32 tree offset, u32 data offset, u32 names offset
             (version 3 adds a u32 of flags)
    tree     one node per file or folder, 14 bytes (version 1) or 22 (version 2+, which appends a
             u64 time): u32 name offset, u16 flags, then for a folder (flags & 2) u32 child count
             and u32 index of its first child, for a file u16 country, u16 language, u32 data
             offset. Node 0 is the root folder.
    names    u16 length, u32 hash, then the name in UTF-16BE
    data     u32 size, then the bytes; flags & 1: zlib (after a u32 uncompressed length)

    read_rcc(blob)              -> {"/gcompris/src/.../image/Gogh4_background.webp": bytes, ...}
    assemble_board(qml, images) -> (H, W, 3) uint8: a jigsaw board's pieces put back together

A board (``boardN_0.qml``) gives the canvas ("width", "height") and each piece's centre as a
fraction of it ("x", "y"). The fractions are rounded to three digits, so neighbouring pieces can
miss each other by a pixel; ``assemble_board`` fills such seams from their neighbours.
"""
from __future__ import annotations

import io
import re
import struct
import zlib

import numpy as np

from weights.errors import WeightsError

_HEADER = struct.Struct(">4sIIII")
_PIECE = re.compile(r'"pixmapfile"\s*:\s*"([^"]+\.webp)"\s*,\s*"x"\s*:\s*"([0-9.]+)"\s*,'
                    r'\s*"y"\s*:\s*"([0-9.]+)"')
_MAX_CANVAS = 4096


def read_rcc(blob: bytes) -> dict:
    """Every file in a Qt resource bundle -> {path: bytes} (zlib-compressed files decompressed)."""
    try:
        magic, version, tree, data, names = _HEADER.unpack_from(blob, 0)
    except struct.error:
        raise WeightsError("not a Qt resource bundle (too short)") from None
    if magic != b"qres" or not 1 <= version <= 3:
        raise WeightsError(f"not a Qt resource bundle this reader knows (magic {magic!r}, "
                           f"version {version})")
    node_size = 14 if version == 1 else 22
    files, pending = {}, [(0, "")]                  # (node index, its folder's path)
    try:
        while pending:
            index, folder = pending.pop()
            node = tree + index * node_size
            name_offset, flags = struct.unpack_from(">IH", blob, node)
            if index:
                length, = struct.unpack_from(">H", blob, names + name_offset)
                start = names + name_offset + 6     # after the length and the hash
                if start + 2 * length > len(blob):
                    raise WeightsError("damaged Qt resource bundle: a name runs past its end")
                name = blob[start:start + 2 * length].decode("utf-16-be")
            else:
                name = ""                           # the root folder
            path = f"{folder}/{name}" if index else ""
            if flags & 2:                           # a folder
                count, first = struct.unpack_from(">II", blob, node + 6)
                if first <= index or tree + (first + count) * node_size > len(blob):
                    raise WeightsError("damaged Qt resource bundle: a folder's children are "
                                       "out of place")
                pending += [(child, path) for child in range(first, first + count)]
                continue
            offset, = struct.unpack_from(">I", blob, node + 10)
            size, = struct.unpack_from(">I", blob, data + offset)
            payload = blob[data + offset + 4:data + offset + 4 + size]
            if len(payload) != size:
                raise WeightsError(f"{path} runs past the end of the bundle")
            if flags & 4:
                raise WeightsError(f"{path} is zstd-compressed, which this reader does not handle")
            files[path] = zlib.decompress(payload[4:]) if flags & 1 else payload
    except (struct.error, UnicodeDecodeError, zlib.error) as exc:
        raise WeightsError(f"damaged Qt resource bundle: {exc}") from None
    return files


def _fill_seams(rgba: np.ndarray) -> np.ndarray:
    """RGB of an (H, W, 4) uint8 picture whose pixels not fully opaque are replaced, outside in,
    by the mean of their opaque 8-neighbours."""
    rgb = rgba[..., :3].astype(np.float64)
    known = rgba[..., 3] == 255
    h, w = known.shape
    while not known.all():
        total, count = np.zeros_like(rgb), np.zeros((h, w))
        padded_rgb = np.pad(rgb * known[..., None], ((1, 1), (1, 1), (0, 0)))
        padded_known = np.pad(known, 1).astype(np.float64)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                total += padded_rgb[dy:dy + h, dx:dx + w]
                count += padded_known[dy:dy + h, dx:dx + w]
        fill = ~known & (count > 0)
        if not fill.any():
            raise WeightsError("the assembled board has no opaque pixel")
        rgb[fill] = total[fill] / count[fill][:, None]
        known = known | fill
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def decode_image(data: bytes, mode: str, name: str):
    """A PIL image in ``mode`` from encoded bytes (WebP, PNG, ...); ``WeightsError`` if unreadable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as opened:
            return opened.convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise WeightsError(f"cannot decode {name}: {exc}") from None


def assemble_board(qml: str, images: dict) -> np.ndarray:
    """Put a GCompris jigsaw board back together -> (H, W, 3) uint8.

    qml: the board's text; images: {"image/<piece>.webp": bytes, ...}. Each piece (RGBA) is
    composited centred at (x * width, y * height) of the canvas; the result is cropped to the
    pieces' opaque extent and its seams filled.
    """
    from PIL import Image

    size = [re.search(rf'"{key}"\s*:\s*(\d+)', qml) for key in ("width", "height")]
    pieces = _PIECE.findall(qml)
    if not all(size) or not pieces:
        raise WeightsError("the board names no canvas size or no pieces")
    if len(pieces) != len(re.findall(r'"pixmapfile"\s*:\s*"[^"]+\.webp"', qml)):
        raise WeightsError("the board has pieces this reader cannot place (no x or y)")
    width, height = (int(match.group(1)) for match in size)
    if not (0 < width <= _MAX_CANVAS and 0 < height <= _MAX_CANVAS):
        raise WeightsError(f"implausible board canvas {width}x{height}")
    margin = max(width, height)                     # room for pieces that stick out of the canvas
    canvas = Image.new("RGBA", (width + 2 * margin, height + 2 * margin), (0, 0, 0, 0))
    for name, x, y in pieces:
        if name not in images:
            raise WeightsError(f"the board's piece {name} is not in the bundle")
        piece = decode_image(images[name], "RGBA", name)
        try:
            cx, cy = float(x) * width, float(y) * height
        except ValueError:
            raise WeightsError(f"the board places {name} at ({x}, {y}), not numbers") from None
        if piece.width > margin or piece.height > margin:
            raise WeightsError(f"the board's piece {name} is larger than its canvas")
        left = margin + round(cx - piece.width / 2)
        top = margin + round(cy - piece.height / 2)
        canvas.alpha_composite(piece, (left, top))
    rgba = np.asarray(canvas)
    rows, cols = np.nonzero(rgba[..., 3] == 255)
    if rows.size == 0:
        raise WeightsError("the board's pieces left no opaque pixel")
    return _fill_seams(rgba[rows.min():rows.max() + 1, cols.min():cols.max() + 1])
