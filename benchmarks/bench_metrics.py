"""Exact ROC AUC + AUPRC for many organs of one full-size map: SaliencyInspector vs scikit-learn.

    .venv/bin/python benchmarks/bench_metrics.py                 # 512 x 512 x 400 voxels, 10 organs
    .venv/bin/python benchmarks/bench_metrics.py --size 256 256 200 --sklearn-organs 10

The map imitates an upsampled CAM (a coarse random field, linearly upsampled, ReLU: about half the
voxels tie at 0); the organs are ellipsoids of very different sizes inside a body-shaped region.
Both sides score the same region voxels. scikit-learn (``roc_auc_score`` + ``average_precision_score``)
sorts again for every organ; we sort the region once (``ranking.Ranking``) and each organ costs a
gather of its own voxels' tie groups. scikit-learn is timed on ``--sklearn-organs`` organs (it takes
tens of seconds per organ at full size); its per-organ time is the mean over those, and the results
are compared there (must agree within 1e-9). Times and the speed ratio are printed, never asserted.

Peak memory is Python-traced allocations (tracemalloc: numpy's buffers are traced) above what was
already allocated (map, labelmap, region), measured separately for each side, plus the process's
maximum resident set size at the end. Run it on an idle machine for stable numbers; on a shared CPU
the ratio is steadier than the absolute times.

One run (default size, 2-core CPU shared with other jobs at load ~5, no GPU, 2026-11-23):
ranking of the 59.1 M region voxels 11.4 s, then 0.13 s per organ (1.27 s per organ with 10 organs);
scikit-learn 81 s per organ; largest difference 2.2e-16; 64x faster per organ with 10 organs, 7.0x
for a single organ; peak traced memory 1.4 GiB (ours) vs 2.8 GiB (scikit-learn) above the inputs;
uint16 copy ranked by counting in 1.1 s (239x per organ); the whole evaluate() with every metric
16 s for 10 organs; process max RSS 5.7 GiB (inputs, 10 full-size masks and both sides included).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc

import numpy as np
from scipy import ndimage

from saliency_inspector.scoring.evaluation import evaluate
from saliency_inspector.scoring.ranking import Ranking, _resolve_device
from saliency_inspector.io.volume import Volume


def make_map(shape, rng) -> np.ndarray:
    """A smooth signed field on a coarse grid (like a CAM at feature resolution), upsampled linearly."""
    coarse = rng.normal(size=tuple(max(2, n // 32) for n in shape)).astype(np.float32)
    zoom = [n / c for n, c in zip(shape, coarse.shape)]
    return ndimage.zoom(coarse, zoom, order=1, grid_mode=True, mode="nearest")[: shape[0], : shape[1], : shape[2]]


def make_organs(shape, count, rng):
    """(labelmap uint8 with organs 1..count, body region bool): ellipsoids of assorted sizes."""
    z, y, x = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    body = (y[None, :, None] ** 2 / 0.8 ** 2 + x[None, None, :] ** 2 / 0.9 ** 2) <= 1.0
    body = np.broadcast_to(body, shape).copy()
    labels = np.zeros(shape, np.uint8)
    for i in range(1, count + 1):
        centre = rng.uniform(-0.5, 0.5, 3)
        radii = rng.uniform(0.08, 0.5, 3)  # from a few voxels' lesion to a liver-sized organ
        lo = [max(0, int((c - r + 1) / 2 * n) - 1) for c, r, n in zip(centre, radii, shape)]
        hi = [min(n, int((c + r + 1) / 2 * n) + 2) for c, r, n in zip(centre, radii, shape)]
        zz, yy, xx = np.meshgrid(z[lo[0]:hi[0]], y[lo[1]:hi[1]], x[lo[2]:hi[2]], indexing="ij", sparse=True)
        inside = ((zz - centre[0]) / radii[0]) ** 2 + ((yy - centre[1]) / radii[1]) ** 2 + \
                 ((xx - centre[2]) / radii[2]) ** 2 <= 1
        box = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        box[inside] = i
    return labels, body


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def ours(relu_flat, region_index, labels_flat, organs, device):
    """One ranking of the region, then AUC + AP per organ; returns results, sort time, organ times."""
    ranking, t_sort = timed(lambda: Ranking(relu_flat[region_index], device=device))
    group_of_voxel = np.full(relu_flat.size, -1, dtype=np.int32)
    group_of_voxel[region_index] = ranking.group_of
    results, t_organs = {}, []
    for organ in organs:
        start = time.perf_counter()
        groups = group_of_voxel[np.flatnonzero(labels_flat == organ)]
        counts = ranking.counts_from_groups(groups[groups >= 0])
        results[organ] = (ranking.roc_auc(counts), ranking.average_precision(counts))
        t_organs.append(time.perf_counter() - start)
    return results, t_sort, t_organs


def scikit_learn(scores, labels_in_region, organs):
    from sklearn.metrics import average_precision_score, roc_auc_score

    results, times = {}, []
    for organ in organs:
        y = labels_in_region == organ  # building the labels is not timed
        start = time.perf_counter()
        results[organ] = (roc_auc_score(y, scores), average_precision_score(y, scores))
        times.append(time.perf_counter() - start)
    return results, times


def traced_peak(fn, *args):
    """(result, peak bytes allocated above the current level while fn ran)."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    out = fn(*args)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return out, peak


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true",
                        help="a full CT: 512 512 400, scikit-learn on 3 organs (~3 min on 2 cores)")
    parser.add_argument("--size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                        help="map size in voxels (quick default 192 192 160; --full 512 512 400)")
    parser.add_argument("--organs", type=int, default=10)
    parser.add_argument("--sklearn-organs", type=int, default=None,
                        help="organs to time scikit-learn on (it is slow; quick default 1, --full 3)")
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu or cuda for the sort")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-evaluate", action="store_true", help="skip timing the whole evaluate()")
    args = parser.parse_args(argv)
    args.size = args.size or ([512, 512, 400] if args.full else [192, 192, 160])
    args.sklearn_organs = args.sklearn_organs or (3 if args.full else 1)

    device = _resolve_device(args.device)  # imports torch now, not inside the timings
    rng = np.random.default_rng(args.seed)
    shape = tuple(reversed(args.size))  # (z, y, x)
    raw = make_map(shape, rng)
    labels, body = make_organs(shape, args.organs, rng)
    relu = np.maximum(raw, 0)
    relu_flat, labels_flat = relu.ravel(), labels.ravel()
    region_index = np.flatnonzero(body.ravel())
    organs = list(range(1, args.organs + 1))
    print(f"map {args.size[0]}x{args.size[1]}x{args.size[2]} = {raw.size / 1e6:.1f} M voxels, region "
          f"{region_index.size / 1e6:.1f} M voxels, {args.organs} organs of "
          f"{min((labels == o).sum() for o in organs) / 1e3:.1f}k..{max((labels == o).sum() for o in organs) / 1e6:.2f}M voxels, "
          f"{np.mean(relu[body] == 0):.0%} of the region at 0 after ReLU; sort on {device}")
    sys.stdout.flush()

    (mine, t_sort, t_organs), peak_ours = traced_peak(ours, relu_flat, region_index, labels_flat, organs, device)
    per_organ_ours = (t_sort + sum(t_organs)) / len(organs)
    print(f"ours:          one ranking {t_sort:.2f} s, then {np.mean(t_organs) * 1e3:.0f} ms per organ; "
          f"all {len(organs)} organs {t_sort + sum(t_organs):.2f} s = {per_organ_ours:.2f} s per organ; "
          f"peak {peak_ours / 2**20:.0f} MiB above the inputs")
    sys.stdout.flush()

    scores = relu_flat[region_index]
    labels_in_region = labels_flat[region_index]
    chosen = organs[: max(1, min(args.sklearn_organs, len(organs)))]
    (theirs, t_sk), peak_sk = traced_peak(scikit_learn, scores, labels_in_region, chosen)
    per_organ_sk = float(np.mean(t_sk))
    worst = max(max(abs(mine[o][0] - theirs[o][0]), abs(mine[o][1] - theirs[o][1])) for o in chosen)
    print(f"scikit-learn:  {per_organ_sk:.2f} s per organ (roc_auc_score + average_precision_score, "
          f"mean of {len(chosen)}); peak {peak_sk / 2**20:.0f} MiB above the inputs")
    print(f"agreement:     largest |difference| in ROC AUC / AUPRC over {len(chosen)} organs = {worst:.1e} "
          f"({'OK' if worst <= 1e-9 else 'NOT within 1e-9'})")
    print(f"speed-up:      {per_organ_sk / per_organ_ours:.1f}x per organ with {len(organs)} organs "
          f"(sort shared); {per_organ_sk / (t_sort + np.mean(t_organs)):.1f}x for a single organ")
    sys.stdout.flush()

    # a quantised copy (as a 16-bit map file would hold it): ranked by counting, no sort
    quantised = np.round(relu / relu.max() * 65535).astype(np.uint16).ravel()
    (q_mine, q_sort, q_organs) = ours(quantised, region_index, labels_flat, organs, device)
    q_theirs, q_sk = scikit_learn(quantised[region_index], labels_in_region, chosen[:1])
    q_worst = max(abs(a - b) for a, b in zip(q_mine[chosen[0]], q_theirs[chosen[0]]))
    print(f"uint16 map:    counting ranks {q_sort:.2f} s, {np.mean(q_organs) * 1e3:.0f} ms per organ; "
          f"scikit-learn {q_sk[0]:.2f} s for one organ; |difference| {q_worst:.1e}; speed-up "
          f"{q_sk[0] / ((q_sort + sum(q_organs)) / len(organs)):.1f}x per organ")
    sys.stdout.flush()

    if not args.skip_evaluate:
        saliency = Volume(raw, spacing=(0.8, 0.8, 2.5))
        masks = {f"organ_{o}": labels == o for o in organs}
        table, t_eval = timed(lambda: evaluate(saliency, masks, region=body, threshold="topk", device=device))
        print(f"evaluate():    all metrics for {len(organs)} organs in {t_eval:.2f} s "
              f"({t_eval / len(organs):.2f} s per organ, including the region's ranking)")
        for row in table.rows:
            o = int(row["segment"].split("_")[1])
            assert abs(row["roc_auc"] - mine[o][0]) < 1e-12 and abs(row["auprc"] - mine[o][1]) < 1e-12
    print(f"max RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
