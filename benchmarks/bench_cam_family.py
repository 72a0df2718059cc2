"""Cost of the CAM family (explainers/cam_family.py, cam_forward.py) against one forward pass.

MONAI DenseNet121 (3D, 1 input channel, 4 classes, random weights: cost does not depend on them),
input 1×1×S³ (default 96), target layer ``class_layers.relu`` (1024 channels at 3³), CPU.

1. Every activation × gradient CAM for ALL classes (``compute_cams``, one call per method, and all
   of them in one call), as a ratio to one forward + backward of one class in the same run.
2. Score-CAM and Ablation-CAM: ours (the forwards give every class at once; Ablation-CAM replaces
   the layer's output by a batch of ablated copies, so the network before it runs once per batch)
   against a faithful per-class loop written from pytorch-grad-cam 1.5.5's ``score_cam.py`` /
   ``ablation_cam.py`` (batches of 16 / 32 full forwards per class; the peer itself cannot be
   installed beside this torch). To keep the run short both handle the same first ``--channels``
   channels of the layer (cost is linear in the channels: × 1024/channels for the whole layer).

Usage: python benchmarks/bench_cam_family.py [--size 96] [--repeats 3] [--channels 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

N_CLASSES = 4
LAYER = "class_layers.relu"


def timed(fn, repeats):
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def peer_score_loop(model, x, A, channels, batch=16):
    """pytorch-grad-cam ScoreCAM.get_cam_weights, per class (its targets loop), 3-D upsampling."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        up = F.interpolate(A[:, :channels], size=x.shape[2:], mode="trilinear", align_corners=True)
        flat = up.view(1, channels, -1)
        up = (up - flat.min(-1)[0][..., None, None, None]) / (flat.max(-1)[0] - flat.min(-1)[0] + 1e-8)[..., None, None, None]
        inputs = x[:, None] * up[:, :, None]
        weights = []
        for c in range(N_CLASSES):  # one call per class, as a user of the peer explains each class
            scores = []
            for i in range(0, channels, batch):
                scores.extend(float(o[c]) for o in model(inputs[0, i:i + batch]))
            weights.append(torch.softmax(torch.tensor(scores), -1))
    return weights


def peer_ablation_loop(model, x, A, channels, layer_module, batch=32):
    """pytorch-grad-cam AblationCAM.get_cam_weights, per class: x repeated, the layer's output
    replaced by ablated copies (its AblationLayer), full forwards."""
    import torch

    weights = []
    with torch.no_grad():
        y = model(x)[0]
        for c in range(N_CLASSES):
            scores = []
            for i in range(0, channels, batch):
                n = min(batch, channels - i)
                ablated = A.repeat(n, 1, 1, 1, 1)
                ablated[torch.arange(n), torch.arange(i, i + n)] = 0.0
                h = layer_module.register_forward_hook(lambda _m, _i, _o, a=ablated: a)
                try:
                    scores.extend(float(o[c]) for o in model(x.repeat(n, 1, 1, 1, 1)))
                finally:
                    h.remove()
            weights.append((y[c] - torch.tensor(scores)) / y[c])
    return weights


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    from monai.networks.nets import DenseNet121

    from saliency_inspector.explainers import cam_forward
    from saliency_inspector.explainers.cam import compute_cams, get_layer
    from saliency_inspector.explainers.registry import METHODS
    from saliency_inspector.explainers.settings import EstimatorSettings

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = DenseNet121(spatial_dims=3, in_channels=1, out_channels=N_CLASSES).eval()
    x = torch.rand(1, 1, args.size, args.size, args.size)
    rows = {}

    def forward():
        with torch.no_grad():
            model(x)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(x)[:, 0].sum().backward()

    load_before = os.getloadavg()
    forward()  # warm-up
    rows["forward (no_grad)"] = timed(forward, args.repeats)
    rows["forward+backward (1 class)"] = fb = timed(forward_backward, args.repeats)
    cams = [m for m, e in METHODS.items() if e.is_cam]
    for m in cams:
        rows[f"{m}, {N_CLASSES} classes"] = timed(lambda m=m: compute_cams(model, x, methods=[m], layer=LAYER),
                                                   args.repeats)
    rows[f"all {len(cams)} CAMs together, {N_CLASSES} classes"] = timed(
        lambda: compute_cams(model, x, methods=cams, layer=LAYER), args.repeats)

    k = args.channels
    settings = EstimatorSettings(layer=LAYER)
    A, logits = cam_forward._activations(model, x, LAYER)
    per = cam_forward.batch_size(model, x, settings, backward=False)
    rows[f"Score-CAM ours, {k} channels, {N_CLASSES} classes (batch {min(per, k)})"] = timed(
        lambda: cam_forward.score_weights(model, x, A, settings, channels=k), args.repeats)
    rows[f"Score-CAM peer loop, {k} channels, {N_CLASSES} classes (batch 16)"] = timed(
        lambda: peer_score_loop(model, x, A, k), args.repeats)
    rows[f"Ablation-CAM ours, {k} channels, {N_CLASSES} classes (batch {min(per, k)})"] = timed(
        lambda: cam_forward.ablation_weights(model, x, A, logits, LAYER, settings, channels=k), args.repeats)
    rows[f"Ablation-CAM peer loop, {k} channels, {N_CLASSES} classes (batch 32)"] = timed(
        lambda: peer_ablation_loop(model, x, A, k, get_layer(model, LAYER)), args.repeats)

    fw = rows["forward (no_grad)"]
    print(f"DenseNet121 3D, input 1x1x{args.size}^3, {N_CLASSES} classes, CPU, {args.threads} threads, "
          f"median of {args.repeats}; load average (1, 5, 15 min) before {load_before}, after {os.getloadavg()}")
    print(f"{'variant':70s} {'seconds':>8s} {'x fwd':>6s} {'x fwd+bwd':>9s}")
    for name, sec in rows.items():
        print(f"{name:70s} {sec:8.3f} {sec / fw:6.2f} {sec / fb:9.2f}")
    print(json.dumps({n: round(s, 4) for n, s in rows.items()}))


if __name__ == "__main__":
    main()
