"""The `render` sub-command: one slice picture of a map over its CT, with a title and banner read
from what `explain` wrote beside the map (its name and predictions.json)."""

from __future__ import annotations

import os
from pathlib import Path

from .cli_commands import parse_point, progress
from .cli_guard import guard_outputs
from .errors import InputError


def cmd_render(args) -> int:
    from .view.render import render_overlay
    from .io.segments import read_segments
    from .io.volume import overlap_fraction, read_volume

    out = render_path(args.out, args.map)
    guard_outputs([args.ct, args.map, args.masks], files=[out])
    ct = read_volume(args.ct)
    saliency = read_volume(args.map)
    if not saliency.same_grid(ct):  # a map of another CT would be drawn over this one without a word
        cover = overlap_fraction(saliency, ct)
        if cover < 0.9:
            raise InputError(f"{args.map}: the map ({saliency.describe_grid()}) covers only {cover:.0%} of the CT "
                             f"({ct.describe_grid()}); give the CT the map was computed for")
        progress(f"note: the map is on another grid than the CT ({saliency.describe_grid()}); it is drawn "
                 "through physical space")
    segments = None
    if args.masks:
        from .scoring.consistency import check_same_body

        segments = read_segments(args.masks)
        check_same_body(segments, ct, ct, allow_mismatch=args.allow_mismatch, warn=progress, source=args.masks)
        segments = segments.resampled_to(ct) if len(segments) else segments
    title, signed, banner = _render_context(Path(args.map))
    path = render_overlay(ct, saliency, segments, out, title=args.title or title,
                          point=parse_point(args.at) if args.at else None, signed=signed, banner=banner)
    print(path)
    return 0


def _render_title(map_path: Path) -> str | None:
    """'HiResCAM · class liver · p = 0.20' for a map written by `explain` (name and predictions.json)."""
    return _render_context(map_path)[0]


def _render_context(map_path: Path) -> tuple:
    """(title, signed, banner) for a map written by `explain` (its name and predictions.json):
    'HiResCAM · class liver · p = 0.20'; whether the method's map is signed (negative evidence shown);
    a warning when the model calls the class absent, with how much its map is magnified against the
    strongest map of the same method in the folder."""
    import json

    import numpy as np

    from .explainers.registry import METHODS, method_label
    from .io.names import safe_name

    stem = map_path.name.split(".")[0]
    method, _, name = stem.partition("_")
    if not name or method not in METHODS:
        return None, False, None
    signed = METHODS[method].meaning == "signed"
    title = f"{method_label(method)} · class {name}"
    try:
        record = json.loads((map_path.parent / "predictions.json").read_text())
        names = [safe_name(c) for c in record["class_names"]]
        p = float(record["probabilities"][names.index(name)])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return title, signed, None
    title += f" · p = {p:.2f}"
    absent = p < 0.5 if record.get("multilabel", record.get("activation") == "sigmoid") else \
        p < max(record["probabilities"])
    if not absent:
        return title, signed, None
    from .io.volume import read_volume

    peaks = {}
    for other in names:
        sibling = map_path.parent / map_path.name.replace(f"{method}_{name}", f"{method}_{other}", 1)
        try:
            peaks[other] = max(float(np.nanmax(read_volume(sibling).array)), 0.0)
        except (InputError, OSError, ValueError):
            continue
    own, strongest = peaks.get(name, 0.0), max(peaks.values(), default=0.0)
    gain = f" · map magnified ×{strongest / own:.1f} vs this method's strongest class" \
        if own > 0 and strongest / own >= 1.05 else " · weak evidence, not a finding"
    return title, signed, f"ABSENT (p = {p:.2f}){gain}"


def render_path(out, map_path) -> Path:
    """``render --out``: a .png file, or a folder (existing, or written with a trailing slash) that
    gets ``<map name>.png``; any other suffix is refused (the picture is always a PNG)."""
    text = str(out)
    out = Path(out)
    if out.is_dir() or text.endswith(("/", os.sep)):
        name = Path(map_path).name
        for suffix in (".nii.gz", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd"):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        return out / f"{name}.png"
    if out.suffix.lower() != ".png":
        raise InputError(f"{out}: render writes a PNG picture; give --out a name ending in .png "
                         "(or a folder)")
    return out
