"""A cohort of phantom CTs with labels, optionally confounded by a spurious marker.

Each case is a :func:`~saliency_inspector.synth.phantom.make_phantom` CT with lesions in some of
the label organs (each class present independently with probability ``prevalence``; sometimes a
lesion in a distractor organ that is no class). With ``confounder=CLASS``, a small bright skin
marker (a metal bead on the anterior abdominal wall, at a fixed body position, never touching an
organ or lesion) appears with probability ``q`` in cases where CLASS is present and ``1 - q``
where it is absent — ``q_train`` in the train and val splits, ``q_test`` in the test split — so a
model can learn the marker instead of the lesion, and a test split with ``q_test = 0.5`` shows it.

Written: one folder per case (``ct.nrrd``, ``organs.seg.nrrd``, ``lesions.seg.nrrd``,
``marker.seg.nrrd`` when the marker is there, ``case.json``), ``manifest.csv`` (read it with
:func:`saliency_inspector.io.manifest.read_manifest`) and ``cohort.json`` (how it was made).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.manifest import write_manifest
from ..io.segments import Segment, Segments, write_segments
from .phantom import CENTER_LPS, make_phantom, write_phantom_case, _sphere

# organs (phantom segment names) whose lesion makes each class present
CLASS_ORGANS = {
    "lung_left": ("lung_left",),
    "lung_right": ("lung_right",),
    "liver": ("liver",),
    "kidney": ("kidney_left", "kidney_right"),
}
# lesions in these organs are negatives for every class: they teach a model that *where* matters
DISTRACTOR_ORGANS = ("spleen",)
# Lesions 1.8x the phantom's nominal radii (2-4 cm): at a model's ~6 mm voxels the nominal 1-2 cm
# lesions cover a few voxels, too few for a small CNN trained for minutes on a CPU.
LESION_SCALE = 1.8
MARKER_HU = 1800.0  # a metal skin bead: brighter than any tissue of the phantom
MARKER_AT = (70.0, -40.0)  # (x, z) mm from the phantom's centre: anterior wall of the left abdomen
MARKER_COLOR = (1.0, 0.0, 1.0)
SPLITS = ("train", "val", "test")


def phantom_cohort(out_dir, n_cases: int, *, seed: int = 0, size=(96, 96, 64), prevalence: float = 0.4,
                   distractor_probability: float = 0.2, confounder: str | None = None,
                   q_train: float = 0.95, q_test: float = 0.5, fractions=(0.6, 0.2, 0.2),
                   lesion_scale: float = LESION_SCALE, marker_radius_mm: float = 10.0,
                   oblique: bool = False, progress=None) -> Path:
    """Write ``n_cases`` phantom cases with labels into ``out_dir``; return the manifest path.

    ``size``: voxels (x, y, z) of every CT. ``fractions``: shares of train / val / test (cases are
    assigned in that order). ``confounder``: a class name whose label the marker follows with
    probability ``q_train`` (train, val) or ``q_test`` (test). Deterministic for a given ``seed``.
    """
    classes = list(CLASS_ORGANS)
    _check(n_cases, prevalence, distractor_probability, confounder, q_train, q_test, fractions, classes)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    splits = _assign_splits(n_cases, fractions)
    case_seeds = np.random.SeedSequence(int(seed)).spawn(n_cases)
    rows = []
    for index, (case_seed, split) in enumerate(zip(case_seeds, splits)):
        q = q_test if split == "test" else q_train
        present, lesions, marker = draw_case(np.random.default_rng(case_seed), prevalence,
                                             distractor_probability, confounder, q)
        phantom_seed = int(case_seed.generate_state(1)[0])
        case = make_phantom(seed=phantom_seed, size=size, lesions=lesions, oblique=oblique,
                            lesion_scale=lesion_scale)
        case_id = f"case{index:04d}"
        folder = out / case_id
        marker_mask = None
        if marker:
            case, marker_mask = add_marker(case, marker_radius_mm)
        paths = write_phantom_case(case, folder)
        row = {"case_id": case_id, "split": split, "ct": f"{case_id}/{paths['ct'].name}",
               "organs": f"{case_id}/{paths['organs'].name}", "lesions": f"{case_id}/{paths['lesions'].name}",
               "marker": "", **{c: int(present[c]) for c in classes}}
        if marker_mask is not None:
            marker_path = write_segments(Segments([Segment("marker", marker_mask, MARKER_COLOR)], case.ct),
                                         folder / "marker.seg.nrrd")
            row["marker"] = f"{case_id}/{marker_path.name}"
        rows.append(row)
        if progress:
            progress(f"case {index + 1}/{n_cases} ({split}): {', '.join(lesions) or 'no lesion'}"
                     + (" + marker" if marker else ""))
    manifest = write_manifest(out / "manifest.csv", rows,
                              ["case_id", "split", "ct", "organs", "lesions", "marker", *classes])
    card = {
        "generator": "saliency_inspector.synth.cohort.phantom_cohort", "seed": int(seed), "cases": n_cases,
        "size_xyz": [int(s) for s in size], "oblique": bool(oblique), "classes": classes,
        "class_organs": {c: list(o) for c, o in CLASS_ORGANS.items()}, "prevalence": prevalence,
        "distractor_organs": list(DISTRACTOR_ORGANS), "distractor_probability": distractor_probability,
        "lesion_scale": lesion_scale, "fractions": dict(zip(SPLITS, fractions)),
        "confounder": None if confounder is None else {
            "class": confounder, "q_train": q_train, "q_test": q_test, "marker_hu": MARKER_HU,
            "marker_radius_mm": marker_radius_mm, "marker_at_x_z_mm_from_center": list(MARKER_AT)},
        "counts": {s: sum(r["split"] == s for r in rows) for s in SPLITS},
        "markers": {s: sum(bool(r["marker"]) for r in rows if r["split"] == s) for s in SPLITS},
    }
    (out / "cohort.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return manifest


def draw_case(rng, prevalence=0.4, distractor_probability=0.2, confounder=None, q=0.95):
    """One case's draw: labels {class: present}, lesion organs, and whether the marker is there.

    The marker follows the confounder's label: present with probability ``q`` when the class is
    present, ``1 - q`` when it is absent (never without a confounder).
    """
    present = {c: bool(rng.random() < prevalence) for c in CLASS_ORGANS}
    lesions = [str(rng.choice(CLASS_ORGANS[c])) for c in CLASS_ORGANS if present[c]]
    if rng.random() < distractor_probability:
        lesions.append(str(rng.choice(DISTRACTOR_ORGANS)))
    marker = confounder is not None and bool(rng.random() < (q if present[confounder] else 1.0 - q))
    return present, lesions, marker


def add_marker(case, radius_mm: float = 10.0):
    """A copy of ``case`` with a bright skin marker painted on its CT, and the marker's mask.

    The bead sits on the anterior skin at a fixed body position (:data:`MARKER_AT`), half outside
    the body, moved further out if it would touch an organ or a lesion.
    """
    grid = case.ct
    body = case.organs.mask("body")
    x, z = CENTER_LPS[0] + MARKER_AT[0], CENTER_LPS[2] + MARKER_AT[1]
    # walk from the front (y small in LPS) to the back along the line (x, ., z): the first body voxel is the skin
    ys = np.arange(CENTER_LPS[1] - 200.0, CENTER_LPS[1] + 200.0, 0.5)
    points = np.stack([np.full_like(ys, x), ys, np.full_like(ys, z)], axis=1)
    ijk = np.rint(grid.physical_to_index(points)).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.array(grid.size_xyz)), axis=1)
    in_body = np.zeros(len(ys), bool)
    in_body[inside] = body[ijk[inside, 2], ijk[inside, 1], ijk[inside, 0]]
    if not in_body.any():
        raise InputError("the phantom's body does not reach the marker position; use a larger size")
    skin_y = ys[np.argmax(in_body)]
    occupied = np.zeros(grid.shape, bool)
    for segment in list(case.organs) + list(case.lesions):
        if segment.name != "body":
            occupied |= segment.mask
    for shift in np.arange(0.0, 4.0 * radius_mm, 0.25 * radius_mm):
        center = (x, skin_y - shift, z)
        box, mask_box, weight = _sphere(grid, center, radius_mm)
        if mask_box.any() and not (occupied[box] & (weight > 0)).any():
            break
    else:
        raise InputError("no room for the marker outside the organs; use a larger phantom size")
    hu = case.ct.array.astype(np.float32)
    hu[box] = (1 - weight) * hu[box] + weight * MARKER_HU
    mask = np.zeros(grid.shape, bool)
    mask[box] = mask_box
    info = {**case.info, "marker": {"center_lps": [float(c) for c in center], "radius_mm": radius_mm,
                                    "hu": MARKER_HU, "voxels": int(mask.sum())}}
    marked = replace(case, ct=grid.with_array(np.clip(np.rint(hu), -1024, 3071).astype(np.int16)), info=info)
    return marked, mask


def _assign_splits(n: int, fractions) -> list:
    counts = np.floor(np.asarray(fractions, float) * n).astype(int)
    counts[0] += n - counts.sum()  # rounding leftovers go to train
    return [s for s, k in zip(SPLITS, counts) for _ in range(k)]


def _check(n_cases, prevalence, distractor_probability, confounder, q_train, q_test, fractions, classes):
    if int(n_cases) != n_cases or n_cases < 1:
        raise InputError(f"--cases must be a positive whole number, got {n_cases!r}")
    for name, value in (("prevalence", prevalence), ("distractor probability", distractor_probability),
                        ("--q-train", q_train), ("--q-test", q_test)):
        if not 0.0 <= float(value) <= 1.0:
            raise InputError(f"{name} must be a probability between 0 and 1, got {value!r}")
    if confounder is not None and confounder not in classes:
        raise InputError(f"--confounder {confounder!r} is not a class; choose one of {', '.join(classes)}")
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise InputError(f"split fractions must be three shares (train val test) summing to 1, got {fractions!r}")
