"""Cost of the importance estimators against the bare Captum call with the same settings.

Model: MONAI DenseNet121 (3D), 1×1×S³ input, 4 classes, random weights (cost does not depend on
the weights). For each estimator: our call (``explainers.attribution.attribute``: memory-budgeted
batches, channel sum, checks) next to the bare Captum call with the same settings and batch size;
IG and SmoothGrad cost per step/sample relative to one forward+backward; fidelity (20 steps,
MIF + LIF, blur replacement, batched) in forward-equivalents per curve. Timings are medians over
interleaved repeats, each paired with a plain forward run just before (the CPU is shared). Peak
memory above the model + input: on CUDA ``max_memory_allocated``; on CPU the sampled peak resident
set of a fresh child process per variant.

Usage: python benchmarks/bench_estimators.py            quick (64³, 4 IG steps, 4 samples, memory of the
                                                         batched estimators only; ≤ 2 min on an idle 2-core CPU)
       python benchmarks/bench_estimators.py --full     96³, IG 32 steps, SmoothGrad 25 samples, 3 repeats
       python benchmarks/bench_estimators.py --demo     each estimator on the demo model at its own size
       [--device cpu|cuda] [--size S] [--repeats N] [--no-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

N_CLASSES = 4
LAYER = "class_layers.relu"


def setup(size, device):
    import torch
    from monai.networks.nets import DenseNet121

    torch.manual_seed(0)
    model = DenseNet121(spatial_dims=3, in_channels=1, out_channels=N_CLASSES).eval().to(device)
    x = torch.rand(1, 1, size, size, size, device=device)
    return model, x


def settings_for(mode):
    from saliency_inspector.explainers.settings import EstimatorSettings

    steps, samples = (32, 25) if mode == "full" else (4, 4)
    # spacing 2 mm: a 50 mm occlusion window is 25 voxels, stride 50 mm
    return EstimatorSettings(steps=steps, samples=samples, spacing_zyx=(2.0, 2.0, 2.0), air_value=0.0,
                             layer=LAYER, memory_gb=2.0)


def variants(model, x, mode):
    """name -> (ours, captum) zero-argument callables, plus single references."""
    import torch
    from captum.attr import GuidedGradCam, InputXGradient, IntegratedGradients, NoiseTunnel, Occlusion, Saliency

    from saliency_inspector.explainers.attribution import attribute
    from saliency_inspector.explainers.cam import get_layer
    from saliency_inspector.explainers.memory import batch_size

    s = settings_for(mode)
    target = 0
    nt_batch = min(s.samples, batch_size(model, x, s))
    ig_batch = min(s.steps, batch_size(model, x, s))
    occ_batch = batch_size(model, x, s, backward=False)
    sigma = s.noise * float(x.max() - x.min())
    window = tuple(round(s.occlusion_window_mm / v) for v in s.spacing_zyx)
    stride = tuple(round(s.occlusion_stride_mm / v) for v in s.spacing_zyx)

    def forward():
        with torch.no_grad():
            model(x)

    def forward_backward():
        xr = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xr)[0, target], xr)

    def smooth():
        torch.manual_seed(s.seed)
        return NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=s.samples,
                                                      nt_samples_batch_size=nt_batch, stdevs=sigma, target=target,
                                                      abs=False)

    pairs = {
        "gradient": (lambda: attribute("gradient", model, x, target, s),
                     lambda: Saliency(model).attribute(x, target=target, abs=False)),
        "inputxgradient": (lambda: attribute("inputxgradient", model, x, target, s),
                           lambda: InputXGradient(model).attribute(x, target=target)),
        "smoothgrad": (lambda: attribute("smoothgrad", model, x, target, s), smooth),
        "ig": (lambda: attribute("ig", model, x, target, s),
               lambda: IntegratedGradients(model).attribute(x, baselines=0.0, target=target, n_steps=s.steps,
                                                           internal_batch_size=ig_batch,
                                                           return_convergence_delta=True)),
        "occlusion": (lambda: attribute("occlusion", model, x, target, s),
                      lambda: Occlusion(model).attribute(x, sliding_window_shapes=(1, *window), strides=(1, *stride),
                                                         baselines=0.0, target=target,
                                                         perturbations_per_eval=occ_batch)),
        "guided_gradcam": (lambda: attribute("guided_gradcam", model, x, target, s),
                           lambda: GuidedGradCam(model, get_layer(model, LAYER)).attribute(
                               x, target=target, interpolate_mode="trilinear")),
    }
    singles = {"forward (no_grad)": forward, "forward+backward": forward_backward,
               "xrai3d (ours, no Captum peer)": lambda: attribute("xrai3d", model, x, target, s),
               "fidelity 20 steps, blur (ours)": lambda: fidelity_run(model, x, s)}
    runs = dict(singles)
    for name, (ours, captum) in pairs.items():
        runs[f"ours: {name}"] = ours
        runs[f"Captum: {name}"] = captum
    return runs, {"nt_batch": nt_batch, "ig_batch": ig_batch, "occlusion_batch": occ_batch, "steps": s.steps,
                  "samples": s.samples, "occlusion_window": window, "occlusion_stride": stride}


class _Clf:
    def __init__(self, model):
        self.module = model

    @staticmethod
    def probabilities(logits):
        import torch

        return torch.sigmoid(logits)


def fidelity_run(model, x, s):
    import torch

    from saliency_inspector.scoring.fidelity import fidelity
    from saliency_inspector.explainers.memory import batch_size

    saliency = torch.rand(x.shape[2:], generator=torch.Generator().manual_seed(0))
    batch = min(21, batch_size(model, x, s, backward=False))
    return fidelity(_Clf(model), x, saliency, 0, steps=20, replacement="blur", spacing_zyx=s.spacing_zyx,
                    blur_mm=10.0, random_baseline=False, batch_size=batch)


def sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_all(size, device, repeats, mode):
    model, x = setup(size, device)
    runs, meta = variants(model, x, mode)
    forward = runs["forward (no_grad)"]
    for key, fn in runs.items():  # warm-up (allocator, kernels; our memory probe is cached per model)
        if repeats > 1 or key.startswith(("forward", "ours: gradient")):
            fn()

    def timed(fn):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - t0

    times = {k: [] for k in runs}
    ratios = {k: [] for k in runs}
    for _ in range(repeats):
        for key, fn in runs.items():
            base = timed(forward)
            t = timed(fn)
            times[key].append(t)
            ratios[key].append(t / base)
    return ({k: statistics.median(v) for k, v in times.items()},
            {k: statistics.median(v) for k, v in ratios.items()}, meta)


def peak_memory_child(size, device, key, mode):
    """In a child process: peak memory (MiB) of one variant above the model + input (see bench_cam)."""
    import threading

    import torch

    model, x = setup(size, device)
    runs, _meta = variants(model, x, mode)
    runs["forward (no_grad)"]()
    if key.startswith("ours"):  # the memory probe runs once per model: not part of a call's peak
        from saliency_inspector.explainers.memory import sample_bytes

        sample_bytes(model, x)
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        runs[key]()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    page = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    base, peak, done = rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        runs[key]()
    finally:
        done.set()
        sampler.join()
    return max(0.0, (peak[0] - base) / 2**20)


def demo_costs():
    """What each estimator costs on the shipped demo model at its own input size (32×64×64), with
    default settings, as a multiple of one forward+backward (median of 3 after a warm-up)."""
    import torch

    from saliency_inspector.explainers.attribution import attribute
    from saliency_inspector.explainers.registry import METHODS
    from saliency_inspector.explainers.settings import EstimatorSettings, for_input
    from saliency_inspector.models.demo_model import demo_classifier
    from saliency_inspector.models.preprocess import preprocess
    from saliency_inspector.synth.phantom import make_phantom

    clf = demo_classifier(device="cpu")
    prepared = preprocess(make_phantom(seed=3, size=(128, 128, 60), lesions=["lung_left"], lesion_scale=1.8).ct,
                          clf.card.input)
    x, model = prepared.tensor, clf.module
    s = for_input(EstimatorSettings(), prepared, clf.card)

    def fb():
        xr = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xr)[0, 0], xr)

    def median_time(fn, n=3):
        fn()
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return statistics.median(out)

    base = median_time(fb)
    print(f"demo model, input {tuple(x.shape)}: forward+backward {base * 1000:.0f} ms")
    costs = {}
    for name in ("hirescam", "gradient", "inputxgradient", "smoothgrad", "vargrad", "ig", "occlusion", "xrai3d"):
        t = median_time(lambda: attribute(name, model, x, 0, s), n=1 if name in ("occlusion", "xrai3d") else 3)
        costs[name] = t / base
        print(f"  {name:16s} {t * 1000:8.0f} ms  {t / base:7.1f} × forward+backward  ({METHODS[name].cost})")
    return costs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="96³, IG 32 steps, SmoothGrad 25 samples, 3 repeats")
    parser.add_argument("--size", type=int)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--demo", action="store_true", help="only: each estimator's cost on the demo model")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.demo:
        warnings.filterwarnings("ignore")
        demo_costs()
        return 0
    mode = "full" if args.full else "quick"
    size = args.size or (96 if args.full else 64)
    repeats = args.repeats or (3 if args.full else 1)
    warnings.filterwarnings("ignore")
    if args.child:
        print(json.dumps(peak_memory_child(size, args.device, args.child, mode)))
        return 0

    import torch

    started = time.perf_counter()
    times, ratios, meta = time_all(size, args.device, repeats, mode)
    memory = {}
    if not args.no_memory:
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
        for key in times:
            batched = key.endswith((": smoothgrad", ": ig"))  # quick mode: the batched estimators only
            if key.startswith(("ours", "Captum")) and (args.full or batched):
                cmd = [sys.executable, __file__, "--child", key, "--size", str(size), "--device", args.device]
                out = subprocess.run(cmd + (["--full"] if args.full else []), capture_output=True, text=True,
                                     check=True, env=env)
                memory[key] = json.loads(out.stdout.strip().splitlines()[-1])
    fb = times["forward+backward"]
    fw = times["forward (no_grad)"]
    print(f"bench_estimators ({mode}): DenseNet121-3D, 1×1×{size}³, device {args.device}, "
          f"{torch.get_num_threads()} threads, median of {repeats}; forward {fw * 1000:.0f} ms, "
          f"forward+backward {fb * 1000:.0f} ms; {json.dumps(meta)}")
    print(f"  {'estimator':16s} {'ours ms':>9s} {'Captum ms':>10s} {'ours/Captum':>12s} {'ours MiB':>9s} "
          f"{'Captum MiB':>11s} {'× fwd+bwd':>10s}")
    rows = {}
    for name in ("gradient", "inputxgradient", "smoothgrad", "ig", "occlusion", "guided_gradcam"):
        ours, theirs = times[f"ours: {name}"], times[f"Captum: {name}"]
        paired = ratios[f"ours: {name}"] / ratios[f"Captum: {name}"]
        mo, mc = memory.get(f"ours: {name}"), memory.get(f"Captum: {name}")
        rows[name] = {"ours_s": ours, "captum_s": theirs, "ratio": paired, "ours_mib": mo, "captum_mib": mc,
                      "x_forward_backward": ours / fb}
        print(f"  {name:16s} {ours * 1000:9.0f} {theirs * 1000:10.0f} {paired:12.2f} "
              f"{'-' if mo is None else f'{mo:.0f}':>9s} {'-' if mc is None else f'{mc:.0f}':>11s} {ours / fb:10.2f}")
    per_step_ig = times["ours: ig"] / meta["steps"] / fb
    per_sample_sg = times["ours: smoothgrad"] / meta["samples"] / fb
    xrai = times["xrai3d (ours, no Captum peer)"]
    fid = times["fidelity 20 steps, blur (ours)"]
    print(f"  IG cost per step: {per_step_ig:.2f} × one forward+backward; SmoothGrad per sample: "
          f"{per_sample_sg:.2f} ×")
    print(f"  xrai3d: {xrai * 1000:.0f} ms = {xrai / times['ours: ig']:.2f} × our IG")
    print(f"  fidelity, 20 steps (MIF + LIF, 40 perturbed inputs, blur, batched): {fid * 1000:.0f} ms = "
          f"{fid / fw / 2:.1f} forward-equivalents per curve")
    print(f"  (bench took {time.perf_counter() - started:.0f} s)")
    return {"rows": rows, "ig_per_step": per_step_ig, "smoothgrad_per_sample": per_sample_sg,
            "fidelity_forward_equivalents_per_curve": fid / fw / 2, "meta": meta}


if __name__ == "__main__":
    main()
