"""A full-size CT through explain / save / evaluate: peak resident memory and time of each.

    .venv/bin/python benchmarks/bench_fullsize.py                  # 512 x 512 x 400, 0.78 x 0.78 x 1 mm
    .venv/bin/python benchmarks/bench_fullsize.py --size 256 256 200 --keep /tmp/fullsize

Writes a phantom (10 organs) and a 117-label labelmap (the organ count of TotalSegmentator: the
body cut into 117 blocks, one uint8 volume) into a work folder, then runs each step in a fresh
process and reads that process's own peak resident set (``os.wait4``):

* CLI ``explain`` (all 4 classes x HiResCAM and Grad-CAM, maps written: explain + save),
* the Python API doing explain, save and evaluate in one process (peak after each step),
* CLI ``evaluate`` of one map against the 10 organs, and against the 117 labels,

and, in this process, how the maps go onto the CT grid: the separable interpolation against
``grid_sample`` for one map (same result), and ``si.explain`` for all classes x 2 methods against a
plain forward pass of MONAI DenseNet121-3D at 96^3 (the maps stay at feature resolution until used).
Times and memory are printed, never asserted. Run it on an idle machine: the CPU is shared here.
No GPU was available on the project's machine: the numbers are CPU-only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable


def run_measured(args, env=None) -> tuple:
    """(seconds, peak RSS in MiB, stdout) of a child process, from its own rusage (os.wait4)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen([str(a) for a in args], stdout=out, stderr=err, text=True, env=env)
        _pid, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed:\n{stderr[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, stdout


def cli(*args):
    return [PYTHON, "-m", "saliency_inspector.cli", *map(str, args)]


API_SCRIPT = r"""
import json, resource, sys, time
import saliency_inspector as si
from saliency_inspector.scoring.evaluation import evaluate
from saliency_inspector.models.demo_model import demo_classifier
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = {}
t = time.perf_counter(); ct = si.read_volume(sys.argv[1]); organs = si.read_segments(sys.argv[2], reference=ct)
clf = demo_classifier(device="cpu"); out["read"] = (time.perf_counter() - t, rss())
t = time.perf_counter(); res = si.explain(clf, ct, methods=["hirescam", "gradcam"], classes="all")
out["explain"] = (time.perf_counter() - t, rss())
t = time.perf_counter(); res.save(sys.argv[3]); out["save"] = (time.perf_counter() - t, rss())
t = time.perf_counter(); table = evaluate(res.map("hirescam", "liver"), organs, ct=ct)
out["evaluate"] = (time.perf_counter() - t, rss())
print(json.dumps(out))
"""


def make_case(folder: Path, size) -> dict:
    """Phantom CT + 10 organs (.seg.nrrd) + a 117-label labelmap of the body (.nrrd, uint8): 13 angular
    sectors around the body's axis x 9 slabs along z, so every label is present and sizes vary."""
    from saliency_inspector.io.volume import write_volume
    from saliency_inspector.synth.phantom import make_phantom, write_phantom_case

    case = make_phantom(seed=0, size=size, lesions=["liver", "lung_left"], lesion_scale=1.8)
    paths = write_phantom_case(case, folder)
    body = case.organs.mask("body")
    nz, ny, nx = body.shape
    y, x = np.mgrid[0:ny, 0:nx]
    sector = ((np.arctan2(y - ny / 2, x - nx / 2) + np.pi) / (2 * np.pi) * 13).astype(np.uint8) % 13
    slab = (np.arange(nz) * 9 // nz).astype(np.uint8)
    labelmap = np.zeros(body.shape, np.uint8)
    for k in range(nz):  # slice by slice: no full-size temporaries
        labelmap[k] = np.where(body[k], slab[k] * 13 + sector + 1, 0)
    del body
    paths["labels117"] = write_volume(case.ct.with_array(labelmap), folder / "labels117.nrrd")
    paths["n_labels"] = int(np.count_nonzero(np.bincount(labelmap.ravel())[1:]))
    return paths


def mapping_speed(ct_path) -> dict:
    """One feature-resolution map onto the CT grid: separable vs grid_sample (same numbers)."""
    import torch

    from saliency_inspector.io.volume import read_volume
    from saliency_inspector.models.preprocess import feature_grid, input_grid, resample_separable, resample_tensor

    torch.set_num_threads(2)
    ct = read_volume(ct_path)
    fgrid = feature_grid(input_grid(ct, size=(32, 64, 64)), (8, 16, 16))
    values = np.random.default_rng(0).normal(size=(1,) + fgrid.shape).astype(np.float32)
    out = {}
    t = time.perf_counter()
    a = resample_separable(values, fgrid, ct)
    out["separable_s"] = time.perf_counter() - t
    del a
    t = time.perf_counter()
    b = resample_tensor(values, fgrid, ct)
    out["grid_sample_s"] = time.perf_counter() - t
    a = resample_separable(values, fgrid, ct)
    out["max_difference"] = float(np.abs(a - b).max())
    return out


def explain_vs_forward(repeats=5) -> dict:
    """si.explain (all 4 classes x HiResCAM, Grad-CAM; maps kept raw) against a plain forward, 96^3."""
    import statistics

    import torch
    from monai.networks.nets import DenseNet121

    import saliency_inspector as si
    from saliency_inspector.io.volume import Volume

    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = DenseNet121(spatial_dims=3, in_channels=1, out_channels=4).eval()
    clf = si.load_classifier(net, card={"classes": ["a", "b", "c", "d"], "input": {"size": [96, 96, 96]}},
                             device="cpu")
    ct = Volume(np.random.default_rng(0).integers(-1000, 1000, (96, 96, 96)).astype(np.int16))
    x = torch.rand(1, 1, 96, 96, 96)
    ratios, mapped = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        clf.predict(x)
        forward = time.perf_counter() - t
        t = time.perf_counter()
        res = si.explain(clf, ct, methods=["hirescam", "gradcam"], classes="all", layer="class_layers.relu")
        explain = time.perf_counter() - t
        ratios.append(explain / forward)
        t = time.perf_counter()
        buffer = np.empty(ct.shape, np.float32)
        for key in res.raw:
            res.map(*key, out=buffer)
        mapped.append((time.perf_counter() - t) / forward)
    return {"explain_over_forward": statistics.median(ratios), "map_all_8_over_forward": statistics.median(mapped)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=(512, 512, 400), metavar=("X", "Y", "Z"))
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    parser.add_argument("--skip-peers", action="store_true", help="skip the 96^3 explain-vs-forward part")
    parser.add_argument("--make-case", nargs=4, metavar=("X", "Y", "Z", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.make_case:
        paths = make_case(Path(args.make_case[3]), tuple(int(v) for v in args.make_case[:3]))
        print(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in paths.items()}))
        return
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_fullsize_"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    try:
        # the case is made in a child process: a child's peak RSS starts from its parent's RSS at fork
        # (Linux keeps the high-water mark across exec), so this process must stay small until the end
        t = time.perf_counter()
        _s, _rss, out = run_measured([PYTHON, __file__, "--make-case", *map(str, args.size), work / "case"], env)
        paths = {k: (Path(v) if isinstance(v, str) else v) for k, v in json.loads(out.strip().splitlines()[-1]).items()}
        print(f"case {args.size[0]}x{args.size[1]}x{args.size[2]} written in {time.perf_counter() - t:.0f} s "
              f"({paths['n_labels']} labels in the labelmap)", flush=True)
        rows = []
        s, rss, _ = run_measured(cli("explain", paths["ct"], "--model", "demo", "--method", "hirescam",
                                     "--method", "gradcam", "--out", work / "maps", "--device", "cpu"), env)
        rows.append(("CLI explain (8 maps, written)", s, rss))
        s, rss, out = run_measured([PYTHON, "-c", API_SCRIPT, paths["ct"], paths["organs"], work / "api-maps"], env)
        api = json.loads(out.strip().splitlines()[-1])
        for step in ("explain", "save", "evaluate"):
            rows.append((f"Python API: {step} (peak so far)", api[step][0], api[step][1]))
        the_map = work / "maps" / "hirescam_liver.nrrd"
        s, rss, _ = run_measured(cli("evaluate", the_map, "--masks", paths["organs"], "--ct", paths["ct"],
                                     "--json", work / "organs.json"), env)
        rows.append(("CLI evaluate, 10 organs", s, rss))
        s, rss, _ = run_measured(cli("evaluate", the_map, "--masks", paths["labels117"], "--ct", paths["ct"],
                                     "--json", work / "labels.json"), env)
        n_rows = len(json.loads((work / "labels.json").read_text()))
        rows.append((f"CLI evaluate, {n_rows} labels (one labelmap)", s, rss))
        print(f"{'step':<44}{'time':>9}{'peak RSS':>12}")
        for name, seconds, peak in rows:
            print(f"{name:<44}{seconds:>8.1f}s{peak:>9.0f} MiB", flush=True)
        speed = mapping_speed(paths["ct"])
        print(f"one map onto the CT grid: separable {speed['separable_s']:.2f} s, grid_sample "
              f"{speed['grid_sample_s']:.2f} s ({speed['grid_sample_s'] / speed['separable_s']:.1f}x), "
              f"largest difference {speed['max_difference']:.1e}", flush=True)
        if not args.skip_peers:
            ratio = explain_vs_forward()
            print(f"si.explain, 4 classes x HiResCAM + Grad-CAM, DenseNet121-3D 96^3: "
                  f"{ratio['explain_over_forward']:.2f}x a plain forward; putting all 8 maps on the 96^3 grid "
                  f"afterwards {ratio['map_all_8_over_forward']:.2f}x", flush=True)
        print("device: CPU only (no GPU on this machine)")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
