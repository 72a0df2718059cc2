"""The demo models' ROC AUC on unseen phantoms made at several sizes, each put through the card.

The same ``--cases`` phantoms (seeds 4,000,000…, never used in training; the demo's lesion sets,
lesion scale 1.8) are made at every size (x×y×z voxels over the same 400×400×300 mm field of view;
"oblique": tilted voxel axes), so the sizes are compared on the same anatomy and lesions. Per model,
size and class: the ROC AUC of the class probability against the label, a 95 % percentile-bootstrap
interval over cases, and the verdict against the issue's line, AUC ≥ 0.90 (PASS: the whole interval
above it; FAIL: the whole interval below; INCONCLUSIVE otherwise).

Usage: python docs/demo_model_sizes.py [--cases N] [--models demo OTHER.pt ...] [--sizes 64x64x32 ...]
       [--json F]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

SIZES = ("64x64x32", "96x96x40", "128x128x60", "160x160x80", "160x160x80-oblique", "256x256x100")
SEED_BASE = 4_000_000
LINE = 0.90


def parse_size(text: str):
    """'160x160x80-oblique' → ((160, 160, 80), True)."""
    dims, _, oblique = text.partition("-")
    return tuple(int(n) for n in dims.split("x")), oblique == "oblique"


def probabilities(classifier, ct) -> np.ndarray:
    """The class probabilities of ``ct`` through the classifier's card (resize, window)."""
    from saliency_inspector.models.preprocess import preprocess

    prepared = preprocess(ct, classifier.card.input, device=classifier.device)
    return classifier.probabilities(classifier.predict(prepared.tensor)).numpy()[0]


def main():
    from saliency_inspector.cohort.stats import model_auc
    from saliency_inspector.models.demo_model import DEMO_CLASSES, LESION_SCALE, labels_for, random_lesions
    from saliency_inspector.models.loaders import load_classifier
    from saliency_inspector.scoring.statistics import verdict_from_interval
    from saliency_inspector.synth.phantom import make_phantom

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=60)
    parser.add_argument("--models", nargs="+", default=["demo"])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--json")
    args = parser.parse_args()
    models = {name: load_classifier(name, device="cpu") for name in args.models}
    rng = np.random.default_rng(0)
    plans = [random_lesions(rng) for _ in range(args.cases)]
    labels = np.stack([labels_for(lesions) for lesions in plans])
    rows = []
    for size_text in args.sizes:
        size, oblique = parse_size(size_text)
        started = time.time()
        probs = {name: [] for name in models}
        for i, lesions in enumerate(plans):
            ct = make_phantom(seed=SEED_BASE + i, size=size, lesions=lesions, oblique=oblique,
                              lesion_scale=LESION_SCALE).ct
            for name, clf in models.items():
                probs[name].append(probabilities(clf, ct))
        for name in models:
            p = np.stack(probs[name])
            predictions = [{"case_id": i, "class": c, "label": int(labels[i, k]), "probability": float(p[i, k])}
                           for i in range(len(plans)) for k, c in enumerate(DEMO_CLASSES)]
            for entry in model_auc(predictions):
                entry.update(model=name, size=size_text,
                             verdict=verdict_from_interval(entry["ci_low"], entry["ci_high"], LINE, n=entry["n"]))
                rows.append(entry)
        print(f"{size_text}: {time.time() - started:.0f} s", flush=True)
    print("\n| model | phantom size (x×y×z) | " + " | ".join(DEMO_CLASSES) + " |")
    print("|---|---|" + "---|" * len(DEMO_CLASSES))
    for name in models:
        for size_text in args.sizes:
            cells = {r["class"]: r for r in rows if r["model"] == name and r["size"] == size_text}
            print(f"| {name} | {size_text.replace('x', '×')} | " + " | ".join(
                f"{cells[c]['roc_auc']:.2f} [{cells[c]['ci_low']:.2f}, {cells[c]['ci_high']:.2f}] "
                f"{cells[c]['verdict'].upper()}" for c in DEMO_CLASSES) + " |")
    positives = {c: int(labels[:, k].sum()) for k, c in enumerate(DEMO_CLASSES)}
    print(f"\nn = {args.cases} phantoms per size; positives per class: {positives}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n_cases": args.cases, "positives": positives, "line": LINE, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
