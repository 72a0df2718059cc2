"""Cost of all-class CAMs against one plain forward pass and against peers (MONAI, Captum).

Models: MONAI DenseNet121 (3D) and MONAI resnet18 (3D, conv1_t_stride=2: the usual stride-2 stem;
MONAI's default is stride 1, which makes the stem ~8× costlier and is not what 3D ResNets use in
practice), 1×1×96³ input, 4 classes, random weights (cost does not depend on the weights).

Timings are medians over interleaved repeats (the CPU is shared, so each round runs every
variant once, each right after a plain forward); "× forward" is that median divided by the
forward pass's median (so the ms and ratio columns agree), "paired ×" the median of the per-round
ratios to the forward run just before (robust to load drift; where the two differ much, the CPU
was busy and the run should be repeated). Peak memory above the model + input: on CUDA ``max_memory_allocated``;
on CPU the sampled peak resident set of a fresh child process per variant. pytorch-grad-cam is not benchmarked: it
needs torchvision, which cannot be installed beside this torch.

Usage: python benchmarks/bench_cam.py [--full] [--repeats N] [--size S] [--device cpu|cuda] [--no-memory]
Default: the quick mode (1×1×48³, 2 repeats, peak memory of four variants of the first model; about
2 minutes on 2 idle cores); ``--full``: 1×1×96³, 5 repeats, memory of both models (about 10 minutes).
Explicit --size/--repeats win over either.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

N_CLASSES = 4
QUICK_MEMORY = ("forward", "ours: hirescam+gradcam", "MONAI GradCAM, 1", "Captum LayerGradCam, 1")
LAYERS = {"densenet121": "class_layers.relu", "resnet18": "layer4"}


def build(name):
    from monai.networks.nets import DenseNet121, resnet18

    if name == "densenet121":
        return DenseNet121(spatial_dims=3, in_channels=1, out_channels=N_CLASSES)
    return resnet18(spatial_dims=3, n_input_channels=1, num_classes=N_CLASSES, conv1_t_stride=2)


def variants(model, x, layer):
    """name -> zero-argument callable computing that variant once."""
    import torch
    from captum.attr import LayerGradCam
    from monai.visualize import GradCAM

    from saliency_inspector.explainers.cam import compute_cams, get_layer

    identity_up = lambda _size: (lambda t: t)  # noqa: E731 - no upsampling: compare the raw maps
    monai_cam = GradCAM(model, target_layers=layer, upsampler=identity_up, postprocessing=lambda t: t)
    captum_cam = LayerGradCam(model, get_layer(model, layer))

    def forward():
        with torch.no_grad():
            model(x)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(x)[:, 0].sum().backward()

    return {
        "forward (no_grad)": forward,
        "forward+backward": forward_backward,
        f"ours: hirescam+gradcam, {N_CLASSES} classes": lambda: compute_cams(
            model, x, methods=("hirescam", "gradcam"), layer=layer),
        "ours: gradcam, 1 class": lambda: compute_cams(model, x, methods=("gradcam",), class_indices=[0],
                                                       layer=layer),
        "MONAI GradCAM, 1 class": lambda: monai_cam(x, class_idx=0),
        f"MONAI GradCAM, {N_CLASSES} classes": lambda: [monai_cam(x, class_idx=c) for c in range(N_CLASSES)],
        "Captum LayerGradCam, 1 class": lambda: captum_cam.attribute(x, target=0),
        f"Captum LayerGradCam, {N_CLASSES} classes": lambda: [captum_cam.attribute(x, target=c)
                                                              for c in range(N_CLASSES)],
    }


def setup(name, size, device):
    import torch

    torch.manual_seed(0)
    model = build(name).eval().to(device)
    x = torch.randn(1, 1, size, size, size, device=device)
    return model, x


def sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_all(name, size, device, repeats):
    """Median seconds per variant and median of its time / the time of a forward run just before it.

    Pairing each run with an adjacent plain forward cancels most of the load drift of a shared CPU;
    the forward variant's own ratio (forward / forward) shows the remaining noise.
    """
    model, x = setup(name, size, device)
    runs = variants(model, x, LAYERS[name])
    forward = runs["forward (no_grad)"]
    for fn in runs.values():  # warm-up (allocator, MONAI's lazy hooks, oneDNN kernels)
        fn()
    times = {k: [] for k in runs}
    ratios = {k: [] for k in runs}

    def timed(fn):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - t0

    for _ in range(repeats):
        for key, fn in runs.items():
            base = timed(forward)
            t = timed(fn)
            times[key].append(t)
            ratios[key].append(t / base)
    return ({k: statistics.median(v) for k, v in times.items()},
            {k: statistics.median(v) for k, v in ratios.items()})


def peak_memory_child(name, size, device, key):
    """Run in a child process: peak memory (MiB) of one variant above the model+input baseline.

    CPU: the resident set is sampled every millisecond from /proc while the variant runs, after
    one warm-up forward; the parent starts the child with MALLOC_MMAP_THRESHOLD_ fixed so that
    freed tensors go back to the OS and the resident set follows the live memory.
    """
    import threading

    import torch

    model, x = setup(name, size, device)
    runs = variants(model, x, LAYERS[name])
    runs["forward (no_grad)"]()
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the full-size run (96³, 5 repeats; ~10 min on 2 cores)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=list(LAYERS))
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.size = args.size or (96 if args.full else 48)
    args.repeats = args.repeats or (5 if args.full else 2)
    if args.child:
        print(json.dumps(peak_memory_child(args.child[0], args.size, args.device, args.child[1])))
        return 0

    import torch

    print(f"bench_cam: 1×1×{args.size}³ input, {N_CLASSES} classes, device {args.device}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} interleaved repeats")
    results = {}
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    for name in args.models:
        times, ratios = time_all(name, args.size, args.device, args.repeats)
        memory = {}
        if not args.no_memory and (args.full or name == args.models[0]):  # quick: memory of the first model
            # quick: only the variants the README compares (a child process per variant costs seconds)
            for key in [k for k in times if args.full or k.startswith(QUICK_MEMORY)]:
                out = subprocess.run([sys.executable, __file__, "--child", name, key, "--size", str(args.size),
                                      "--device", args.device], capture_output=True, text=True, check=True,
                                     env=env)
                memory[key] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"\n{name} (target layer {LAYERS[name]}); forward = {times['forward (no_grad)'] * 1000:.0f} ms")
        print(f"  {'variant':42s} {'ms':>8s} {'× forward':>10s} {'paired ×':>9s} {'peak MiB':>9s}")
        forward_s = times["forward (no_grad)"]
        for key, t in times.items():
            mem = f"{memory[key]:9.0f}" if key in memory else f"{'-':>9s}"
            print(f"  {key:42s} {t * 1000:8.0f} {t / forward_s:10.2f} {ratios[key]:9.2f} {mem}", flush=True)
        results[name] = {"seconds": times, "ratio_to_forward": {k: t / forward_s for k, t in times.items()},
                         "paired_ratio": ratios, "peak_mib": memory}
    return results


if __name__ == "__main__":
    out = main()
    sys.exit(out if isinstance(out, int) else 0)
