"""Where a transfer run's result goes: the output path (checked before any work) and the write.

An existing file is never overwritten unless --force: the result goes to the first
free numbered name (out-1.png, out-2.png, ...). A write that fails saves the
image in the temporary folder instead and says so.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import NamedTuple

from minivgg.image import save_rgb
from minivgg.transfer.common import UsageError


def default_name(config) -> Path:
    """<content>-<style>.png from the options alone ('texture' / 'content' for the missing role)."""
    objective, images = config.objective, config.images
    content = Path(images.content).stem if objective.has_content else "texture"
    style = "+".join(Path(s).stem for s in images.styles) if objective.has_style else "content"
    return Path(f"{content}-{style}.png")


def free_name(out: Path) -> Path:
    """``out`` if it does not exist, else the first free out-1.png, out-2.png, ..."""
    k = 0
    candidate = out
    while candidate.exists():
        k += 1
        candidate = out.with_name(f"{out.stem}-{k}{out.suffix}")
    return candidate


def _check_folder(out: Path) -> None:
    folder = out.parent
    if not folder.exists():
        raise UsageError(f"--out '{out}': the folder '{folder}' does not exist")
    if not folder.is_dir():
        raise UsageError(f"--out '{out}': '{folder}' is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--out '{out}': the folder '{folder}' is not writable")
    try:                                        # what os.access cannot see (root squash, ACLs)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(f"--out '{out}': cannot create files in '{folder}' "
                         f"({exc.strerror or exc})") from None


def output_path(config) -> tuple[Path, list]:
    """(path to write, notes), checked now: its folder exists and is writable; never an
    existing file unless --force (then the first free numbered name, and a note saying so)."""
    out = Path(config.output.out) if config.output.out else default_name(config)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out '{out}': the output is a PNG, give a name ending in .png")
    _check_folder(out)
    if out.is_dir():
        raise UsageError(f"--out '{out}': is a directory")
    if out.exists() and not config.output.force:
        taken, out = out, free_name(out)
        return out, [f"{taken} exists; writing {out} instead (--force overwrites)"]
    return out, []


class Written(NamedTuple):
    """What became of the result: the path written, or the problem and where it went instead."""

    path: Path | None            # where the result is, as asked (or a free name beside it)
    note: str | None = None      # said when the name changed during the run
    problem: str | None = None   # why it could not be written where asked
    fallback: Path | None = None  # where it was saved instead (the temporary folder), if anywhere


def write_result(rgb, out: Path, force: bool) -> Written:
    """Write the (H, W, 3) uint8 result to ``out`` (or a free numbered name if it appeared meanwhile)."""
    note = None
    if out.exists() and not force:
        taken, out = out, free_name(out)
        note = f"{taken} appeared during the run; writing {out} instead"
    try:
        return Written(save_rgb(rgb, out), note)
    except OSError as exc:
        problem = f"cannot write {out} ({exc.strerror or exc})"
    try:
        fallback = save_rgb(rgb, free_name(Path(tempfile.gettempdir()) / out.name))
    except OSError:
        return Written(None, note, problem)
    return Written(None, note, problem, fallback)
