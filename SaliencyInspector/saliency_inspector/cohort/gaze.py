"""Cohort gaze: every case's maps against its readers, with the cohort's own centre bias and the
other images' fixations as the shuffled-AUC negatives (Bigolin Lanfredi et al.; ricbl/etsaliencymaps,
``src/get_center_bias.py`` and ``src/compare_heatmaps.py``; ``/work/shared/notes/trust.md``).

Two steps, because the centre bias and the negatives need every case:

1. Per case (:func:`write_case_gaze`, in the worker): the readers' fixations (the manifest's
   ``fixations`` column: CSV or ``.mrk.json``, a ``reader`` column telling readers apart) are put on
   a **body-box grid**: :data:`BOX` voxels spanning the bounding box of the body, axes along L, P, S
   (identity direction), so voxel (z, y, x) is the same fraction of the body box in every case. The
   case's own physical space is used only inside the case; different patients meet only as arrays on
   this grid (the reference code aligns heatmaps by the chest bounding box). Saved in ``gaze.npz``:
   the body, each reader's heatmap (σ mm on the case's gaze grid, then onto the box grid, sum 1),
   each fixation's box voxel and reader, and each map (its declared importance: ReLU or |map|).
2. Over the cohort (:func:`cohort_gaze`, on the driver): centre bias = the mean over all images of
   their readers' mean heatmap (all images, the image itself included, as ``get_center_bias.py``);
   per image the sAUC negatives are the fixations of every *other* image inside this body; per map
   :func:`..scoring.gaze.score_image` (leave-one-reader-out ground truth, paired inter-observer);
   cohort means with percentile-bootstrap 95 % intervals over images, the paired difference to the
   inter-observer baseline, and verdicts (sAUC vs 0.5, sNCC vs 0) that need :data:`MIN_CASES` images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.volume import Volume, resample_to

BOX = (32, 32, 32)  # body-box grid, voxels (z, y, x): ~10 mm for a 320 mm body, σ = 10 mm
GAZE_FILE = "gaze.npz"
MIN_CASES = 5
RESAMPLES = 2000
LINES = {"sauc": 0.5, "sncc": 0.0}  # what a map must beat to agree with gaze beyond the centre bias
PER_CASE_KEYS = ("case_id", "method", "class", "n_readers", "n_fixations", "n_negatives")
COHORT_KEYS = ("method", "class", "metric", "n", "mean", "ci_low", "ci_high", "n_inter_observer",
               "inter_observer", "io_ci_low", "io_ci_high", "difference", "diff_ci_low", "diff_ci_high",
               "verdict", "why")


def body_box_grid(body: np.ndarray, reference: Volume, shape=BOX) -> Volume:
    """A grid of ``shape`` voxels (z, y, x) spanning the physical bounding box of ``body`` (bool on
    ``reference``'s grid), identity direction: index fractions are body-box fractions along L, P, S."""
    idx = np.nonzero(body)
    if not idx[0].size:
        raise InputError("the body mask is empty")
    lo = np.array([i.min() for i in idx[::-1]], float) - 0.5  # (i, j, k) voxel-edge corners
    hi = np.array([i.max() for i in idx[::-1]], float) + 0.5
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    physical = reference.index_to_physical(corners)
    start, stop = physical.min(0), physical.max(0)
    spacing = (stop - start) / np.asarray(shape[::-1], float)
    return Volume(np.broadcast_to(np.zeros((), np.uint8), tuple(shape)), tuple(spacing),
                  tuple(start + spacing / 2), np.eye(3))


def write_case_gaze(folder: Path, fixations_path, ct: Volume, explanation, sigma_mm: float = 10.0) -> dict:
    """Step 1 for one case: ``gaze.npz`` in ``folder``; returns what the case's result records."""
    from ..explainers.registry import METHODS
    from ..scoring.fixations import drop_outside, fixation_voxels, read_fixations
    from ..scoring.gaze import density, gaze_grid
    from ..scoring.masks import body_mask

    body = body_mask(ct)
    fixations = drop_outside(read_fixations(fixations_path), ct, body)
    box = body_box_grid(body, ct)
    region = resample_to(ct.with_array(body.astype(np.uint8)), box, "nearest").array.astype(bool)
    fine = gaze_grid(ct, sigma_mm)
    fine_body = resample_to(ct.with_array(body.astype(np.uint8)), fine, "nearest").array.astype(bool)
    heatmaps, points, reader_of, names = [], [], [], []
    for r in fixations.readers:
        own = fixations.subset(fixations.reader == r)
        d = density(own, fine, fine_body, sigma_mm)
        on_box = np.clip(resample_to(fine.with_array(d.astype(np.float32)), box, "linear").array, 0, None) * region
        zyx, inside = fixation_voxels(own, box)
        flat = np.ravel_multi_index(tuple(zyx.T), BOX)
        flat = flat[region.ravel()[flat]]
        if on_box.sum() <= 0 or not flat.size:
            continue
        heatmaps.append((on_box / on_box.sum()).astype(np.float32))
        points.append(flat)
        reader_of.append(np.full(flat.size, len(names)))
        names.append(str(r))
    if not names:
        raise InputError(f"{fixations_path}: no fixation lies inside the body")
    maps = {}
    for (method, klass), volume in explanation.maps.items():
        a = np.asarray(resample_to(volume, box, "linear").array, np.float64)
        a = np.abs(a) if METHODS[method].importance == "abs" else np.maximum(a, 0.0)  # ReLU for CAMs and signed maps
        maps[f"map|{method}|{klass}"] = (a * region).astype(np.float32)
    np.savez_compressed(Path(folder) / GAZE_FILE, region=region, heatmaps=np.stack(heatmaps),
                        fixations=np.concatenate(points), reader=np.concatenate(reader_of),
                        readers=np.asarray(names), sigma_mm=sigma_mm, **maps)
    return {"file": GAZE_FILE, "readers": names, "n_fixations": int(sum(p.size for p in points)),
            "box": box.describe_grid(), "notes": list(fixations.notes)}


def cohort_gaze(cases: list[tuple[str, Path]], seed: int = 0, resamples: int = RESAMPLES,
                n_bootstrap: int = 200) -> tuple[list[dict], list[dict], list[str]]:
    """Step 2: (per-case rows, cohort rows, notes) from ``cases`` = [(case id, its gaze.npz)]."""
    from ..scoring.gaze import GAZE_KEYS, score_image

    data = []
    for case_id, path in cases:
        with np.load(path) as z:
            data.append((case_id, {k: z[k] for k in z.files}))
    if not data:
        return [], [], []
    centre_all = np.mean([d["heatmaps"].mean(0) for _, d in data], axis=0).ravel()
    notes = [f"centre bias: the mean heatmap of all {len(data)} images with fixations, aligned by the body box "
             f"({'x'.join(map(str, BOX))} grid)"]
    if len(data) == 1:
        notes.append("one image with fixations: no other images' fixations, so sAUC's negatives are body voxels "
                     "weighted by the centre bias")
    per_case = []
    for i, (case_id, d) in enumerate(data):
        region = d["region"].ravel()
        flat = np.flatnonzero(region)
        pos_of = np.full(region.size, -1, np.int64)
        pos_of[flat] = np.arange(flat.size)
        centre = centre_all[flat]
        centre = centre / centre.sum() if centre.sum() > 0 else np.full(flat.size, 1.0 / flat.size)
        dens = [h.ravel()[flat].astype(np.float64) for h in d["heatmaps"]]
        fix = [pos_of[d["fixations"][d["reader"] == r]] for r in range(len(dens))]
        others = [pos_of[o["fixations"]] for j, (_, o) in enumerate(data) if j != i]
        negatives = np.concatenate(others) if others else np.zeros(0, np.int64)
        negatives = negatives[negatives >= 0] if negatives.size else negatives
        for key in [k for k in d if k.startswith("map|")]:
            _, method, klass = key.split("|", 2)
            s = d[key].ravel()[flat].astype(np.float64)
            sc = score_image(s, dens, fix, centre, negatives if negatives.size else None, seed, n_bootstrap)
            row = {"case_id": case_id, "method": method, "class": klass, "n_readers": sc.n_readers,
                   "n_fixations": sc.n_fixations, "n_negatives": int(negatives.size), **sc.metrics}
            row.update({f"io_{k}": (sc.inter_observer or {}).get(k, float("nan")) for k in GAZE_KEYS})
            per_case.append(row)
    return per_case, _cohort_rows(per_case, seed, resamples), notes


def _cohort_rows(per_case: list[dict], seed: int, resamples: int) -> list[dict]:
    """Per (method, class, metric): mean over images with a bootstrap interval over images, the
    inter-observer mean and the paired difference (images with ≥ 2 readers), the verdict."""
    from ..scoring.gaze import GAZE_KEYS, judge
    from .stats import bootstrap_mean_ci

    out = []
    groups: dict = {}
    for row in per_case:
        groups.setdefault((row["method"], row["class"]), []).append(row)
    for (method, klass), rows in groups.items():
        for k in GAZE_KEYS:
            v = np.array([r[k] for r in rows], float)
            io = np.array([r[f"io_{k}"] for r in rows], float)
            paired = np.isfinite(io)
            lo, hi = bootstrap_mean_ci(v, resamples, seed)
            io_lo, io_hi = bootstrap_mean_ci(io[paired], resamples, seed) if paired.any() else (np.nan, np.nan)
            diff = v[paired] - io[paired]
            d_lo, d_hi = bootstrap_mean_ci(diff, resamples, seed) if paired.any() else (np.nan, np.nan)
            verdict, why = ("", "")
            if k in LINES:
                verdict, why = judge(float(np.mean(v)), [lo, hi], len(v), MIN_CASES, "image", LINES[k])
            out.append({"method": method, "class": klass, "metric": k, "n": len(v), "mean": float(np.mean(v)),
                        "ci_low": lo, "ci_high": hi, "n_inter_observer": int(paired.sum()),
                        "inter_observer": float(np.mean(io[paired])) if paired.any() else float("nan"),
                        "io_ci_low": io_lo, "io_ci_high": io_hi,
                        "difference": float(np.mean(diff)) if paired.any() else float("nan"),
                        "diff_ci_low": d_lo, "diff_ci_high": d_hi, "verdict": verdict, "why": why})
    return out


def write_gaze_tables(out: Path, cases: list[tuple[str, Path]], seed: int = 0,
                      resamples: int = RESAMPLES) -> tuple[dict, list[dict], list[str]]:
    """``gaze_per_case.csv`` and ``gaze_cohort.csv`` from the cases' ``gaze.npz`` (nothing when no case
    has fixations); returns ({name: path}, cohort rows, notes)."""
    from ..io.records import write_csv
    from ..scoring.gaze import GAZE_KEYS

    per_case, cohort, notes = cohort_gaze(cases, seed, resamples)
    if not per_case:
        return {}, [], []
    columns = [*PER_CASE_KEYS, *GAZE_KEYS, *(f"io_{k}" for k in GAZE_KEYS)]
    files = {"gaze_per_case": write_csv(Path(out) / "gaze_per_case.csv", per_case, columns),
             "gaze_cohort": write_csv(Path(out) / "gaze_cohort.csv", cohort, list(COHORT_KEYS))}
    return files, cohort, notes
