"""Cost of the trust checks, as ratios measured in one run.

1. Cascading randomization (every block re-initialised from the output down, the map recomputed
   and compared — SSIM and Spearman — after each step) as a multiple of one ``si.explain`` of the
   same method and class; the goal is at most 1.1 × (blocks + 1) (the original map plus one per
   block: no model reloads, one deep copy). Models: the shipped demo model on a phantom at its input
   size, and MONAI DenseNet121-3D (random weights, 4 classes, 1×1×96³, HiResCAM at
   ``class_layers.relu``) on a 96³ CT.
2. Gaze metrics (NSS, CC, KL, SIM, AUC, sAUC, sNCC with 1,000 bootstrap resamples) of a map on a
   512×512×400 CT grid against 5,000 fixations: goal under 5 s.

Timings are medians over ``--repeats`` interleaved rounds (the CPU is shared). Quick by default
(one round, about a minute here); ``--repeats 3`` for steadier numbers.

Usage: python benchmarks/bench_trust.py [--repeats N] [--device cpu|cuda] [--skip-densenet]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def bench_randomization(classifier, ct, class_name, repeats):
    import saliency_inspector as si
    from saliency_inspector.scoring.trust import randomization_curve
    from saliency_inspector.explainers.randomization import randomized_maps

    si.explain(classifier, ct, methods=["hirescam"], classes=[class_name])  # warm-up
    explain_s, cascade_s, blocks = [], [], 0
    for _ in range(repeats):
        explain_s.append(_timed(lambda: si.explain(classifier, ct, methods=["hirescam"], classes=[class_name]))[0])
        seconds, curve = _timed(lambda: randomization_curve(
            randomized_maps(classifier, ct, "hirescam", class_name), "hirescam", keep_maps=False))
        cascade_s.append(seconds)
        blocks = len(curve.blocks) - 1
    e, c = statistics.median(explain_s), statistics.median(cascade_s)
    return {"blocks": blocks, "explain_s": round(e, 3), "cascade_s": round(c, 3), "ratio": round(c / e, 2),
            "budget": round(1.1 * (blocks + 1), 2), "per_map": round(c / e / (blocks + 1), 3),
            "final_ssim": round(curve.ssim[-1], 3)}


def densenet_classifier(device):
    from monai.networks.nets import DenseNet121

    from saliency_inspector.models.card import ModelCard
    from saliency_inspector.models.loaders import load_classifier

    import torch

    torch.manual_seed(0)
    net = DenseNet121(spatial_dims=3, in_channels=1, out_channels=4)
    card = ModelCard.from_dict({"name": "densenet121-random", "classes": ["a", "b", "c", "d"],
                                "input": {"size": [96, 96, 96], "window": [-200, 300]},
                                "target_layer": "class_layers.relu"})
    return load_classifier(net, card=card, device=device)


def bench_gaze(repeats):
    from saliency_inspector.scoring.fixations import Fixations
    from saliency_inspector.scoring.gaze import compare_with_gaze
    from saliency_inspector.io.volume import Volume

    shape = (400, 512, 512)
    spacing = (0.78, 0.78, 1.0)
    axes = [np.exp(-0.5 * ((np.arange(n) - c) / s) ** 2).astype(np.float32)
            for n, c, s in zip(shape, (180, 300, 200), (40, 50, 60))]
    saliency = Volume(axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :], spacing=spacing)
    yy, xx = np.ogrid[:512, :512]
    body2d = ((yy - 256) / 230.0) ** 2 + ((xx - 256) / 250.0) ** 2 <= 1
    body = np.broadcast_to(body2d, shape)
    # 5,000 fixations drawn from the map (separable: one axis at a time), kept inside the body
    rng = np.random.default_rng(0)
    picks = []
    while sum(len(p) for p in picks) < 5000:
        zyx = np.stack([rng.choice(n, size=6000, p=a / a.sum()) for n, a in zip(shape, axes)], axis=1)
        picks.append(zyx[body2d[zyx[:, 1], zyx[:, 2]]])
    zyx = np.concatenate(picks)[:5000].astype(float)
    fixations = Fixations(saliency.index_to_physical(zyx[:, ::-1]), np.ones(5000), np.array(["r"] * 5000, dtype=object))
    times = []
    for _ in range(repeats):
        seconds, result = _timed(lambda: compare_with_gaze(saliency, fixations, np.ascontiguousarray(body), seed=0))
        times.append(seconds)
    return {"shape_zyx": list(shape), "fixations": 5000, "seconds": round(statistics.median(times), 2),
            "goal_s": 5.0, "nss": round(result.metrics["nss"], 3), "sauc": round(result.metrics["sauc"], 3),
            "gaze_grid": result.grid}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-densenet", action="store_true")
    args = parser.parse_args()

    import saliency_inspector as si
    from saliency_inspector.io.volume import Volume
    from saliency_inspector.synth.phantom import make_phantom

    results = {}
    demo = si.load_classifier("demo", device=args.device)
    case = make_phantom(seed=5, size=(64, 64, 32), lesions=["lung_left"], lesion_scale=1.8)
    results["randomization_demo"] = bench_randomization(demo, case.ct, "lung_left", args.repeats)
    print("demo model:", json.dumps(results["randomization_demo"]), flush=True)
    if not args.skip_densenet:
        rng = np.random.default_rng(0)
        ct = Volume(rng.normal(0, 200, (96, 96, 96)).astype(np.float32), spacing=(2.0, 2.0, 2.0))
        results["randomization_densenet121_96"] = bench_randomization(densenet_classifier(args.device), ct, "a",
                                                                      args.repeats)
        print("DenseNet121-3D 96^3:", json.dumps(results["randomization_densenet121_96"]), flush=True)
    results["gaze_512x512x400"] = bench_gaze(args.repeats)
    print("gaze 512x512x400, 5000 fixations:", json.dumps(results["gaze_512x512x400"]), flush=True)
    return results


if __name__ == "__main__":
    main()
