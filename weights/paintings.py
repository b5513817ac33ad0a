"""More paintings for Fig. 2 (Hokusai, Kandinsky, van Gogh), from Debian's gcompris-qt-data.

No package on PyPI that we checked ships a famous painting other than OpenCV's Starry Night
(``weights.samples``). Debian's ``gcompris-qt-data=3.1-2`` (44 MB, any architecture) does, for
GCompris' children's activities: whole van Gogh paintings in ``details.rcc`` and, cut into jigsaw
pieces, Hokusai, Kandinsky and others in ``paintings.rcc``. Fetching them is an explicit, optional
step (nothing else in minivgg needs them):

    python -m weights --paintings              # download the .deb from deb.debian.org once
    python -m weights --paintings --deb FILE   # or use one you have (apt-get download gcompris-qt-data)

It also uses the bundles of an installed ``gcompris-qt-data`` when their sha256s match. The
package and both bundles are checked against the sha256s pinned here; each painting is decoded
(WebP, by Pillow), jigsaw boards are put back together (``weights.rcc``), and the result is cached
as a PNG in ``cache_dir()/paintings/`` with a ``manifest.json`` of their sha256s, written last,
like the sample photos. The package itself is not kept.

    painting_names()       -> ["cafe_terrace", "composition_viii", "great_wave", ...]
    painting_path(name)    -> Path(".../paintings/great_wave.png"); PaintingsMissing until fetched
    PAINTINGS[name]        -> Painting(title, painter, year, ...)

Licences: the artworks are in the public domain in the US and in every country whose term is the
painter's life plus 70 years or less (Kandinsky died in 1944, the others by 1890). GCompris marks
the ``details`` scans "Public domain"; the jigsaw scans come from the WebMuseum and are
distributed under GPL-3.0-or-later as part of GCompris (see ``Painting.licence``).
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from weights.atomic import atomic_path, building, remove_leftovers, scratch_folder, stopped_note
from weights.debian import deb_files, download
from weights.errors import WeightsError
from weights.fetch import check_sha256, sha256_of
from weights.home import cache_dir, notice, writable_folder
from weights.rcc import assemble_board, decode_image, read_rcc

DEB_REQUIREMENT = "gcompris-qt-data=3.1-2"
DEB_NAME = "gcompris-qt-data_3.1-2_all.deb"
DEB_URL = f"https://deb.debian.org/debian/pool/main/g/gcompris-qt/{DEB_NAME}"
DEB_SHA256 = "e9cf06ab2105529068df73085784e835d2ff03f870d2a8091f09125d40abac9f"
RCC_FOLDER = "./usr/share/gcompris-qt/rcc/"
INSTALLED_RCC = Path("/usr/share/gcompris-qt/rcc")
BUNDLE_SHA256 = {
    "details.rcc": "555de36db64bf67bbc35a3cc9308cedfcffc6c1273a69285467a572c20963b85",
    "paintings.rcc": "1276d4f9c26f94ec130833c03bea5185f61b4f986df6981182cdb1be69e9db98",
}
_DETAILS = "/gcompris/src/activities/details/resource/"
_JIGSAW = "/gcompris/src/activities/paintings/resource/"
_PUBLIC_DOMAIN = "scan marked public domain by GCompris (details activity)"
_GPL = ("artwork public domain (US; life+70); scan from the WebMuseum, distributed by GCompris "
        "under GPL-3.0-or-later")
#: Free space a fetch needs in the paintings folder: the 44 MB package and the paintings kept.
PAINTINGS_BUILD_BYTES = 60 * 10**6


@dataclass(frozen=True)
class Painting:
    title: str
    painter: str
    year: str
    bundle: str        # "details.rcc" (one whole WebP) or "paintings.rcc" (a jigsaw board)
    resource: str      # the WebP's path in the bundle, or the board's .qml
    licence: str

    @property
    def caption(self) -> str:
        """"Katsushika Hokusai, The Great Wave off Kanagawa (c. 1831)"."""
        return f"{self.painter}, {self.title} ({self.year})"


PAINTINGS = {
    "great_wave": Painting("The Great Wave off Kanagawa", "Katsushika Hokusai", "c. 1831",
                           "paintings.rcc", _JIGSAW + "board/board7_0.qml", _GPL),
    "composition_viii": Painting("Composition VIII", "Wassily Kandinsky", "1923",
                                 "paintings.rcc", _JIGSAW + "board/board19_0.qml", _GPL),
    "village_street": Painting("Village Street in Auvers", "Vincent van Gogh", "1890",
                               "paintings.rcc", _JIGSAW + "board/board22_0.qml", _GPL),
    "harvesters": Painting("The Harvesters", "Pieter Bruegel the Elder", "1565",
                           "paintings.rcc", _JIGSAW + "board/board17_0.qml", _GPL),
    "night_cafe": Painting("The Night Café", "Vincent van Gogh", "1888", "details.rcc",
                           _DETAILS + "image/Van_Gogh_The_Night_Cafe_background.webp",
                           _PUBLIC_DOMAIN),
    "cafe_terrace": Painting("Café Terrace at Night", "Vincent van Gogh", "1888", "details.rcc",
                             _DETAILS + "image/Gogh4_background.webp", _PUBLIC_DOMAIN),
}


class PaintingsMissing(WeightsError):
    """The paintings have not been fetched (``python -m weights --paintings``)."""


def paintings_dir() -> Path:
    """``cache_dir()/paintings``"""
    return cache_dir() / "paintings"


def _manifest_path() -> Path:
    return paintings_dir() / "manifest.json"


def _read_manifest():
    """The manifest's {file name: sha256}, or None when absent, not ours, or missing a painting."""
    try:
        files = json.loads(_manifest_path().read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    wanted = {f"{name}.png" for name in PAINTINGS}
    if not isinstance(files, dict) or set(files) != wanted or \
            not all(isinstance(v, str) for v in files.values()):
        return None
    return files


def _installed_bundles():
    """The bundles of an installed gcompris-qt-data when both are there with our sha256s, or None."""
    if not all((INSTALLED_RCC / name).is_file() for name in BUNDLE_SHA256):
        return None
    try:
        bundles = {name: (INSTALLED_RCC / name).read_bytes() for name in BUNDLE_SHA256}
    except OSError:
        return None                                 # unreadable: fetch the package instead
    if any(sha256_of(data) != BUNDLE_SHA256[name] for name, data in bundles.items()):
        return None                                 # another version: fetch the pinned one
    return bundles


def _bundles(deb) -> tuple:
    """{"details.rcc": bytes, "paintings.rcc": bytes}, checked, and where they came from."""
    installed = _installed_bundles() if deb is None else None
    if installed is not None:
        return installed, f"installed {DEB_REQUIREMENT} ({INSTALLED_RCC})"
    with scratch_folder(_manifest_path()) as tmp:
        if deb is None:
            notice(f"downloading Debian's {DEB_REQUIREMENT} (44 MB) once from deb.debian.org, "
                   f"for the paintings in it; only those are kept, in {paintings_dir()}.")
            deb = download(DEB_URL, Path(tmp) / DEB_NAME, DEB_NAME)
            source = DEB_URL
        else:
            deb = Path(deb).expanduser()
            if not deb.is_file():
                raise WeightsError(f"--deb '{deb}': no such file")
            source = f"{deb} ({DEB_REQUIREMENT})"
        try:
            check_sha256(deb, DEB_SHA256, f"{deb.name} (expected {DEB_NAME})")
        except OSError as exc:                      # not the cache folder's problem: say whose
            raise WeightsError(f"cannot read {deb}: {exc.strerror or exc}") from None
        found = deb_files(deb, {RCC_FOLDER + name for name in BUNDLE_SHA256})
    bundles = {name: found[RCC_FOLDER + name] for name in BUNDLE_SHA256}
    for name, data in bundles.items():
        check_sha256(data, BUNDLE_SHA256[name], f"{DEB_NAME}: {name}")
    return bundles, source


def _decode(painting: Painting, files: dict) -> np.ndarray:
    """One painting out of its bundle's files -> (H, W, 3) uint8."""
    if painting.resource not in files:
        raise WeightsError(f"{painting.bundle} has no {painting.resource}")
    if painting.resource.endswith(".qml"):
        folder = painting.resource.rsplit("/board/", 1)[0] + "/"
        pieces = {path[len(folder):]: data for path, data in files.items() if path.startswith(folder)}
        try:
            qml = files[painting.resource].decode("utf-8")
        except UnicodeDecodeError:
            raise WeightsError(f"{painting.resource} is not UTF-8 text") from None
        return assemble_board(qml, pieces)
    return np.asarray(decode_image(files[painting.resource], "RGB", painting.resource))


def _fetch(deb) -> dict:
    """Get the bundles, decode every painting, write the PNGs, then the manifest -> files."""
    from PIL import Image

    bundles, source = _bundles(deb)
    contents = {name: read_rcc(data) for name, data in bundles.items()}
    files = {}
    for name, painting in PAINTINGS.items():
        rgb = _decode(painting, contents[painting.bundle])
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="PNG")
        with atomic_path(paintings_dir() / f"{name}.png") as tmp:
            tmp.write_bytes(buffer.getvalue())
        files[f"{name}.png"] = sha256_of(buffer.getvalue())
    manifest = {"source": source, "deb_sha256": DEB_SHA256, "bundle_sha256": BUNDLE_SHA256,
                "files": dict(sorted(files.items()))}
    with atomic_path(_manifest_path()) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    return files


def fetch_paintings(deb=None, again: bool = False) -> dict:
    """Fetch and cache the paintings unless they are (``again``: even if they are) -> {file: sha256}.

    deb: a ``gcompris-qt-data_3.1-2_all.deb`` on disk to read instead of downloading one
    (default: ``$MINIVGG_GCOMPRIS_DEB`` if set).
    """
    deb = deb or os.environ.get("MINIVGG_GCOMPRIS_DEB") or None
    if not again and paintings_fetched():
        return _read_manifest()
    with writable_folder(paintings_dir(), PAINTINGS_BUILD_BYTES, "cannot cache the paintings") \
            as check_space:
        with building(_manifest_path()) as unfinished:
            if not again and paintings_fetched():
                return _read_manifest()             # another process fetched them meanwhile
            note = stopped_note(unfinished, remove_leftovers(paintings_dir(), ""),
                                "fetching the paintings")
            if note:
                notice(note + "; fetching them again.")
            check_space()
            return _fetch(deb)


def painting_names() -> list:
    """The names ``painting_path`` takes, sorted (whether or not they are fetched yet)."""
    return sorted(PAINTINGS)


def paintings_fetched() -> bool:
    """True when every painting is cached and intact."""
    files = _read_manifest()
    return files is not None and all(
        (paintings_dir() / name).is_file() and sha256_of(paintings_dir() / name) == sha
        for name, sha in files.items())


def painting_path(name: str) -> Path:
    """Path of the cached painting ``name``, checked by sha256; ``PaintingsMissing`` when the
    paintings have not been fetched (or one was damaged since)."""
    if name not in PAINTINGS:
        raise WeightsError(f"no painting {name!r}; available: {', '.join(painting_names())}")
    how = ("run `python -m weights --paintings` once (downloads Debian's gcompris-qt-data, 44 MB, "
           "from deb.debian.org; or add --deb FILE for a copy you have)")
    files = _read_manifest()
    if files is None:
        raise PaintingsMissing(f"the extra paintings are not fetched yet: {how}")
    path = paintings_dir() / f"{name}.png"
    if not path.is_file() or sha256_of(path) != files[path.name]:
        raise PaintingsMissing(f"the cached painting {path} is missing or damaged: {how}")
    return path
