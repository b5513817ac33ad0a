"""The extra paintings (``weights.paintings``): Qt resource bundles, jigsaw boards, .deb files, cache.

The readers are tested on bundles and packages built here byte by byte, so they run everywhere;
the real gcompris-qt-data package is only read where it is already fetched (it is an explicit,
optional 44 MB download), and that test says so when it skips.
"""
from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from weights import WeightsError
from weights import paintings as pt
from weights.debian import deb_files, download
from weights.rcc import _fill_seams, assemble_board, decode_image, read_rcc


# ---------------------------------------------------------------- builders

def make_rcc(files: dict, compress=(), version=3) -> bytes:
    """A Qt resource bundle holding ``files`` ({"/a/b.txt": bytes}); paths in ``compress`` zlib'd."""
    tree = {"": {}}                                  # nested dicts; leaves are the paths
    for path in files:
        parts = path.strip("/").split("/")
        node = tree[""]
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = path
    names, data, nodes = bytearray(), bytearray(), []

    def name_offset(name):
        offset = len(names)
        names.extend(struct.pack(">HI", len(name), 0) + name.encode("utf-16-be"))
        return offset

    # breadth first: a folder's children get consecutive node indices, as rcc lays them out
    nodes.append(None)
    queue = [(0, "", tree[""])]
    while queue:
        index, name, children = queue.pop(0)
        first = len(nodes)
        offset = name_offset(name) if index else 0
        nodes[index] = struct.pack(">IHII", offset, 2, len(children), first)
        for child_name, child in sorted(children.items()):
            child_index = len(nodes)
            nodes.append(None)
            if isinstance(child, dict):
                queue.append((child_index, child_name, child))
            else:
                payload = files[child]
                flags = 0
                if child in compress:
                    payload, flags = struct.pack(">I", len(payload)) + zlib.compress(payload), 1
                nodes[child_index] = struct.pack(">IHHHI", name_offset(child_name), flags, 0, 0,
                                                 len(data))
                data.extend(struct.pack(">I", len(payload)) + payload)
    node_size = 14 if version == 1 else 22
    tree_bytes = b"".join(n + (b"\0" * 8 if version >= 2 else b"") for n in nodes)
    assert all(len(n) + (8 if version >= 2 else 0) == node_size for n in nodes)
    header_size = 24 if version >= 3 else 20
    tree_at = header_size
    data_at = tree_at + len(tree_bytes)
    names_at = data_at + len(data)
    header = struct.pack(">4sIIII", b"qres", version, tree_at, data_at, names_at)
    header += b"\0\0\0\0" if version >= 3 else b""
    return header + tree_bytes + bytes(data) + bytes(names)


def make_deb(files: dict, compression="xz") -> bytes:
    """A Debian package (ar archive) whose data.tar.<compression> holds ``files``."""
    def tar_of(entries, mode):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode=mode) as tar:
            for name, payload in entries.items():
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
        return buffer.getvalue()

    def member(name, payload):
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(payload):<10}".encode() + b"`\n"
        return header + payload + (b"\n" if len(payload) % 2 else b"")

    return (b"!<arch>\n" + member("debian-binary", b"2.0\n")
            + member("control.tar.xz", tar_of({"./control": b"Package: x\n"}, "w:xz"))
            + member(f"data.tar.{compression}", tar_of(files, f"w:{compression}")))


def webp(rgba: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="WEBP", lossless=True)
    return buffer.getvalue()


def jigsaw(picture: np.ndarray, cuts=2, width=300, height=220):
    """Cut ``picture`` into cuts x cuts rectangles on a width x height board -> (qml, {name: webp})."""
    h, w = picture.shape[:2]
    left, top = (width - w) // 2, (height - h) // 2
    ys, xs = np.linspace(0, h, cuts + 1).astype(int), np.linspace(0, w, cuts + 1).astype(int)
    pieces, images = [], {}
    for i in range(cuts):
        for j in range(cuts):
            block = picture[ys[i]:ys[i + 1], xs[j]:xs[j + 1]]
            rgba = np.concatenate([block, np.full(block.shape[:2] + (1,), 255, np.uint8)], axis=2)
            name = f"image/piece_{i}{j}.webp"
            images[name] = webp(rgba)
            cx = (left + xs[j] + block.shape[1] / 2) / width       # rounded to three digits below,
            cy = (top + ys[i] + block.shape[0] / 2) / height       # as GCompris' boards are
            pieces.append(f'{{"pixmapfile" : "{name}", "x" : "{cx:.3f}", "y" : "{cy:.3f}"}}')
    qml = ('QtObject { property var levels : [ {"pixmapfile" : "image/bg.svg", "width": %d, '
           '"height": %d}, %s ] }' % (width, height, ", ".join(pieces)))
    return qml, images


# ---------------------------------------------------------------- Qt resource bundles

@pytest.mark.parametrize("version", [1, 2, 3])
def test_read_rcc_returns_every_file_of_a_nested_bundle(version):
    files = {"/gcompris/a/one.webp": b"\x01" * 5, "/gcompris/a/b/two.qml": b"text " * 40,
             "/top.txt": b"", "/gcompris/three": bytes(range(256))}
    blob = make_rcc(files, compress={"/gcompris/a/b/two.qml"}, version=version)
    assert read_rcc(blob) == files


def test_read_rcc_refuses_what_is_not_a_bundle_or_is_cut_short():
    blob = make_rcc({"/a/b": b"x" * 100})
    with pytest.raises(WeightsError, match="not a Qt resource bundle"):
        read_rcc(b"PK\x03\x04" + blob[4:])
    with pytest.raises(WeightsError, match="not a Qt resource bundle"):
        read_rcc(blob[:10])
    with pytest.raises(WeightsError, match="damaged|past the end"):
        read_rcc(blob[:len(blob) - 60])             # the names and part of the data are gone


# ---------------------------------------------------------------- jigsaw boards

def test_assemble_board_puts_the_pieces_back_and_fills_the_seams():
    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, (4, 5, 3)).astype(np.float64)
    picture = np.asarray(Image.fromarray(smooth.astype(np.uint8)).resize((157, 113),
                                                                          Image.BILINEAR))
    qml, images = jigsaw(picture, cuts=3)
    out = assemble_board(qml, images)
    # rounding the centres to 1/1000 of the board can shift a piece by a pixel, so the assembled
    # picture may lose or gain a row or column at its edge, and a seam between two pieces is filled
    assert abs(out.shape[0] - 113) <= 1 and abs(out.shape[1] - 157) <= 1
    h, w = min(out.shape[0], 113), min(out.shape[1], 157)
    close = np.abs(out[:h, :w].astype(int) - picture[:h, :w]).max(axis=2) <= 12
    assert close.mean() > 0.97, close.mean()
    assert out.min() > 0 or picture.min() == 0      # no black (transparent) seam left


def test_fill_seams_paints_holes_and_seams_from_their_opaque_neighbours():
    rgba = np.zeros((6, 9, 4), np.uint8)
    rgba[:, :4] = (200, 100, 50, 255)               # two opaque halves ...
    rgba[:, 5:] = (20, 40, 60, 255)
    rgba[:, 4, 3] = 0                               # ... a transparent seam between them
    rgba[0, 0, 3] = 128                             # and a half-transparent corner
    rgb = _fill_seams(rgba)
    assert np.array_equal(rgb[:, :4], np.broadcast_to([200, 100, 50], (6, 4, 3)))
    assert np.array_equal(rgb[:, 5:], np.broadcast_to([20, 40, 60], (6, 4, 3)))
    assert np.array_equal(rgb[:, 4], np.broadcast_to([110, 70, 55], (6, 3)))   # the mean of both sides
    with pytest.raises(WeightsError, match="no opaque pixel"):
        _fill_seams(np.zeros((3, 3, 4), np.uint8))


def test_undecodable_pieces_and_misplaced_ones_are_refused_in_words():
    with pytest.raises(WeightsError, match="cannot decode x.webp"):
        decode_image(b"RIFF\0\0\0\0WEBPgarbage", "RGB", "x.webp")
    qml, images = jigsaw(np.full((40, 60, 3), 100, np.uint8), cuts=2)
    with pytest.raises(WeightsError, match="not numbers"):
        assemble_board(qml.replace('"x" : "0.', '"x" : "0.5.', 1), images)
    with pytest.raises(WeightsError, match="cannot place"):
        assemble_board(qml.replace('"x" : ', '"left" : ', 1), images)


def test_assemble_board_refuses_a_board_without_pieces_or_with_a_missing_piece():
    qml, images = jigsaw(np.zeros((40, 60, 3), np.uint8) + 100, cuts=2)
    with pytest.raises(WeightsError, match="not in the bundle"):
        assemble_board(qml, {k: v for k, v in images.items() if not k.endswith("_11.webp")})
    with pytest.raises(WeightsError, match="no canvas size or no pieces"):
        assemble_board('QtObject { "width": 10, "height": 10 }', images)


# ---------------------------------------------------------------- Debian packages

@pytest.mark.parametrize("compression", ["xz", "gz"])
def test_deb_files_reads_files_from_the_data_member(tmp_path, compression):
    deb = tmp_path / "x.deb"
    deb.write_bytes(make_deb({"./usr/share/a.rcc": b"A" * 1001, "./usr/share/b.rcc": b"B",
                              "./usr/share/c": b"C"}, compression))
    assert deb_files(deb, {"./usr/share/a.rcc", "./usr/share/b.rcc"}) == {
        "./usr/share/a.rcc": b"A" * 1001, "./usr/share/b.rcc": b"B"}
    with pytest.raises(WeightsError, match="has no ./usr/share/z"):
        deb_files(deb, {"./usr/share/z"})


def test_deb_files_refuses_what_is_not_a_package(tmp_path):
    path = tmp_path / "not.deb"
    path.write_bytes(b"<html>404</html>")
    with pytest.raises(WeightsError, match="not a Debian package"):
        deb_files(path, {"./x"})
    whole = make_deb({"./x": np.random.default_rng(0).bytes(5000)})
    path.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(WeightsError, match="cannot read|no data.tar|damaged"):
        deb_files(path, {"./x"})


def test_download_copies_a_url_and_names_one_it_cannot_reach(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(np.random.default_rng(2).bytes(3 * 2**20 + 17))
    out = download(source.as_uri(), tmp_path / "copy.bin", "copy")
    assert out.read_bytes() == source.read_bytes()
    with pytest.raises(WeightsError, match="cannot download file:"):
        download((tmp_path / "absent.bin").as_uri(), tmp_path / "x.bin", "x")


# ---------------------------------------------------------------- the cache, on a package built here

@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A gcompris-like .deb with one whole painting and one jigsaw board, pinned in place of the
    real sha256s; the cache goes to tmp_path."""
    rng = np.random.default_rng(1)
    whole = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    board_picture = np.full((50, 70, 3), 180, np.uint8)
    board_picture[:, 35:] = 60
    qml, pieces = jigsaw(board_picture, cuts=2, width=100, height=80)
    details = make_rcc({"/d/image/whole.webp": webp(np.dstack([whole, np.full((30, 40), 255,
                                                                               np.uint8)]))})
    jig = make_rcc({"/j/board/board1_0.qml": qml.encode(),
                    **{f"/j/{name}": data for name, data in pieces.items()}},
                   compress={"/j/board/board1_0.qml"})
    deb = tmp_path / "fake.deb"
    deb.write_bytes(make_deb({pt.RCC_FOLDER + "details.rcc": details,
                              pt.RCC_FOLDER + "paintings.rcc": jig}))
    monkeypatch.setenv("MINIVGG_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(pt, "DEB_SHA256", pt.sha256_of(deb))
    monkeypatch.setattr(pt, "BUNDLE_SHA256", {"details.rcc": pt.sha256_of(details),
                                              "paintings.rcc": pt.sha256_of(jig)})
    monkeypatch.setattr(pt, "INSTALLED_RCC", tmp_path / "not-installed")
    monkeypatch.setattr(pt, "PAINTINGS", {
        "whole": pt.Painting("Whole", "A", "1900", "details.rcc", "/d/image/whole.webp", "pd"),
        "board": pt.Painting("Board", "B", "1901", "paintings.rcc", "/j/board/board1_0.qml", "gpl"),
    })
    return deb, whole, board_picture


def test_paintings_are_missing_with_a_message_until_fetched(fake_package):
    deb, whole, board_picture = fake_package
    assert not pt.paintings_fetched()
    with pytest.raises(pt.PaintingsMissing, match="python -m weights --paintings"):
        pt.painting_path("whole")
    with pytest.raises(WeightsError, match="no painting 'nope'; available: board, whole"):
        pt.painting_path("nope")

    pt.fetch_paintings(deb)
    assert pt.paintings_fetched()
    got = np.asarray(Image.open(pt.painting_path("whole")))
    assert np.array_equal(got, whole)                # lossless WebP in, PNG out: exact
    board = np.asarray(Image.open(pt.painting_path("board")))
    assert abs(board.shape[0] - 50) <= 1 and abs(board.shape[1] - 70) <= 1
    h, w = min(board.shape[0], 50), min(board.shape[1], 70)
    assert (np.abs(board[:h, :w].astype(int) - board_picture[:h, :w]) <= 2).mean() > 0.95
    manifest = json.loads((pt.paintings_dir() / "manifest.json").read_text())
    assert set(manifest["files"]) == {"whole.png", "board.png"}


def test_without_a_package_it_downloads_one_and_keeps_only_the_paintings(fake_package,
                                                                          monkeypatch):
    deb, whole, _ = fake_package
    fetched = []

    def fake_download(url, dest, what):             # stands in for deb.debian.org
        fetched.append(url)
        Path(dest).write_bytes(deb.read_bytes())
        return Path(dest)

    monkeypatch.setattr(pt, "download", fake_download)
    pt.fetch_paintings()
    assert fetched == [pt.DEB_URL]
    assert np.array_equal(np.asarray(Image.open(pt.painting_path("whole"))), whole)
    assert sorted(p.name for p in pt.paintings_dir().iterdir()) == [
        "board.png", "manifest.json", "manifest.json.lock", "whole.png"]   # no package left
    pt.fetch_paintings()                            # intact: nothing fetched again
    assert len(fetched) == 1
    pt.fetch_paintings(again=True)
    assert len(fetched) == 2


def test_an_installed_gcompris_is_used_instead_of_a_download(fake_package, monkeypatch, tmp_path):
    deb, whole, _ = fake_package
    installed = tmp_path / "installed"
    installed.mkdir()
    for path, data in deb_files(deb, {pt.RCC_FOLDER + n for n in pt.BUNDLE_SHA256}).items():
        (installed / Path(path).name).write_bytes(data)
    monkeypatch.setattr(pt, "INSTALLED_RCC", installed)
    monkeypatch.setattr(pt, "download", lambda *a: pytest.fail("downloaded despite the bundles"))
    pt.fetch_paintings()
    assert np.array_equal(np.asarray(Image.open(pt.painting_path("whole"))), whole)
    assert "installed" in json.loads((pt.paintings_dir() / "manifest.json").read_text())["source"]


def test_a_damaged_painting_is_noticed_and_fetching_repairs_it(fake_package):
    deb, whole, _ = fake_package
    pt.fetch_paintings(deb)
    path = pt.painting_path("whole")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(pt.PaintingsMissing, match="missing or damaged"):
        pt.painting_path("whole")
    pt.fetch_paintings(deb)
    assert np.array_equal(np.asarray(Image.open(pt.painting_path("whole"))), whole)


def test_a_package_with_another_sha256_is_refused(fake_package, tmp_path):
    deb, _, _ = fake_package
    other = tmp_path / "other.deb"
    other.write_bytes(deb.read_bytes() + b"\0\0")
    with pytest.raises(WeightsError, match="wrong sha256"):
        pt.fetch_paintings(other)
    assert not pt.paintings_fetched()


def test_the_command_line_fetch_refuses_bad_input_in_one_line(tmp_path):
    for args, message in ((["--deb", "x.deb"], "--deb and --again go with --paintings"),
                          (["--again"], "--deb and --again go with --paintings"),
                          (["--paintings", "--deb", str(tmp_path / "absent.deb")], "no such file")):
        result = subprocess.run([sys.executable, "-m", "weights", *args], capture_output=True,
                                text=True)
        assert result.returncode == 2, args
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("python -m weights: error: ")
        assert message in result.stderr and not result.stdout


def test_the_transfer_command_takes_a_painting_name_once_fetched(fake_package):
    from minivgg.transfer.common import UsageError
    from minivgg.transfer.inputs import _sample
    deb, whole, _ = fake_package
    with pytest.raises(UsageError, match="style image 'whole': the extra paintings are not "
                                         "fetched yet: run `python -m weights --paintings`"):
        _sample("whole", "style image")
    pt.fetch_paintings(deb)
    assert _sample("whole", "style image") == pt.painting_path("whole")


# ---------------------------------------------------------------- the real package, where fetched

def test_the_real_paintings_where_fetched():
    if not pt.paintings_fetched():
        pytest.skip("the extra paintings are not fetched here (optional: python -m weights "
                    "--paintings downloads Debian's gcompris-qt-data, 44 MB)")
    sizes = {}
    for name in pt.PAINTINGS:
        with Image.open(pt.painting_path(name)) as image:
            sizes[name] = image.size
            assert image.mode == "RGB"
    # the sizes ../shared/notes/painting-sources.md measured after its own reassembly (width x
    # height); the crop to fully opaque pixels may differ from its crop by a row or two
    noted = {"great_wave": (665, 450), "composition_viii": (667, 460), "village_street": (600, 469),
             "harvesters": (686, 500), "night_cafe": (634, 500), "cafe_terrace": (401, 500)}
    for name, (width, height) in noted.items():
        assert abs(sizes[name][0] - width) <= 2 and abs(sizes[name][1] - height) <= 2, name
    assert sizes["night_cafe"] == (634, 500) and sizes["cafe_terrace"] == (401, 500)  # whole files
