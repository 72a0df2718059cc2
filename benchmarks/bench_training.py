"""Cost of the HiResCAM mask loss per training step, and the shortcut numbers on a 200-case cohort.

1. Step time: one optimiser step (forward, loss, backward, Adam) on a batch of 8, plain BCE vs
   BCE + λ·mask loss (HiResCAM through ``explain.cam.differentiable_cams``, ``create_graph=True``).
   Networks: the demo architecture at the demo model's input (32×64×64, 8-channel lesion map) and
   MONAI DenseNet121 (3D) at 64³ with the mask loss at ``class_layers.relu``. Medians over
   interleaved repeats (the CPU is shared: each round runs both variants back to back); the
   ratio is the median of the paired ratios. Goal: ≤ 1.6× (one extra backward to the layer).
2. Shortcut (``--full``): a liver-confounded 200-case cohort (q = 0.95 train/val, 0.5 test), the
   two models of :mod:`saliency_inspector.workflows.shortcut` trained from scratch, measured on the test split.
   The quick default mode measures the *shipped* pair on a fresh 60-case cohort instead (no training).

Usage: python benchmarks/bench_training.py [--repeats N] [--full] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def step_times(name, repeats):
    import torch

    from saliency_inspector.training.loop import training_step_loss

    torch.manual_seed(0)
    if name == "demo":
        from saliency_inspector.models.demo_model import DEFAULT_ARCH_KWARGS, build_demo_network

        model = build_demo_network(**DEFAULT_ARCH_KWARGS)
        size, layer = tuple(DEFAULT_ARCH_KWARGS["input_size"]), "lesion_map"
    else:
        from monai.networks.nets import DenseNet121

        model = DenseNet121(spatial_dims=3, in_channels=1, out_channels=4)
        size, layer = (64, 64, 64), "class_layers.relu"
    x = torch.rand(8, 1, *size)
    y = (torch.rand(8, 4) > 0.5).float()
    # the allowed region: one random box per case and class, at input resolution
    allowed = torch.zeros(8, 4, *size, dtype=torch.bool)
    allowed[..., size[0] // 4: size[0] // 2, size[1] // 4: size[1] // 2, size[2] // 4: size[2] // 2] = True
    from saliency_inspector.explainers.cam import differentiable_cams

    with torch.no_grad():
        feature_shape = tuple(differentiable_cams(model.eval(), x[:1], layer)[1]["hirescam"].shape[2:])
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(lam):
        t0 = time.perf_counter()
        loss, _, _ = training_step_loss(model, x, y, allowed, lam, layer, feature_shape)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return time.perf_counter() - t0

    step(0.0), step(1 / 3)  # warm-up
    plain, masked = [], []
    for _ in range(repeats):
        plain.append(step(0.0))
        masked.append(step(1 / 3))
    ratios = [m / p for m, p in zip(masked, plain)]
    return {"network": name, "input": list(size), "layer": layer, "batch": 8,
            "plain_s": statistics.median(plain), "mask_loss_s": statistics.median(masked),
            "ratio": statistics.median(ratios)}


def shortcut_numbers(full: bool, work: Path):
    from saliency_inspector.workflows import shortcut as S
    from saliency_inspector.models.loaders import load_classifier

    t0 = time.perf_counter()
    if full:
        manifest = S.shortcut_cohort(work / "cohort", 200, seed=S.TRAINING["cohort_seed"])
        results = S.train_shortcut_models(manifest, work / "models",
                                          progress=lambda m: print("  " + m, flush=True))
        models = {k: load_classifier(str(r["weights"]), card=str(r["card"]), device="cpu")
                  for k, r in results.items()}
    else:
        manifest = S.shortcut_cohort(work / "cohort", 60, seed=2014, fractions=(0.0, 0.5, 0.5))
        models = S.shortcut_classifiers(device="cpu")
    numbers = {k: S.shortcut_metrics(clf, manifest) for k, clf in models.items()}
    plain, mask = numbers["plain"]["ioa_liver"], numbers["maskloss"]["ioa_liver"]
    record = {"mode": "full (trained here on 200 cases)" if full else "quick (shipped models, 60 new cases)",
              "models": numbers, "ioa_relative_gain": (mask - plain) / plain if plain else None,
              "published_gain": "33-37 % (Draelos & Carin, RAD-ChestCT, 36,316 CTs)", "case": "-",
              "seconds": round(time.perf_counter() - t0, 1)}
    print(S.format_shortcut(record))
    return record


def main():
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--full", action="store_true", help="train the shortcut pair on 200 cases (~tens of minutes)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the CPU is shared)")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = {"torch": torch.__version__, "threads": args.threads, "steps": []}
    for name in ("demo", "densenet121"):
        r = step_times(name, args.repeats)
        out["steps"].append(r)
        print(f"{name:12s} {r['input']} batch 8: plain step {r['plain_s'] * 1000:7.0f} ms, "
              f"+ mask loss {r['mask_loss_s'] * 1000:7.0f} ms  -> {r['ratio']:.2f}x (goal <= 1.6x)", flush=True)
    with tempfile.TemporaryDirectory() as work:
        out["shortcut"] = shortcut_numbers(args.full, Path(work))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
