"""Cohort throughput: cases per minute with 1 local worker, 2 local workers and 2 Ray actors.

    .venv/bin/python benchmarks/bench_batch.py          # quick: 6 cases of 128x128x96 (about 2 min)
    .venv/bin/python benchmarks/bench_batch.py --full   # the issue's 12 cases

Every run is a fresh output folder over the same phantom cohort (made once, cached under the
temporary folder), the shipped demo model, HiResCAM + Grad-CAM for its 4 classes, every map scored
against every organ and lesion. Throughput counts from the call to the last case's result: it
includes starting the workers (processes spawned, actors created) and loading the model in each;
it excludes ``ray.init`` (a cluster is started once, not per run) and the cohort tables written at
the end (the same for every executor; timed separately). Ratios are what matter: Ray against local
at the same worker count (goal: overhead <= 15 %), 2 workers against 1 (goal: >= 1.6x). All three
give the same per_case.csv (checked).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from saliency_inspector.workflows.batch import batch
from saliency_inspector.cohort.executors import InProcessExecutor, ProcessPoolCaseExecutor, RayExecutor
from saliency_inspector.synth.cohort import phantom_cohort

SIZE = (128, 128, 96)


def cohort(n: int) -> Path:
    folder = Path(tempfile.gettempdir()) / f"si-bench-cohort-{n}-{'x'.join(map(str, SIZE))}"
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        phantom_cohort(folder, n, seed=0, size=SIZE)
    return manifest


def timed_run(manifest: Path, executor, out: Path, workers: int) -> dict:
    """End to end (from the call to the last case) and steady state (after every worker's first
    case, i.e. without start-up and model loading: what a long cohort sees)."""
    shutil.rmtree(out, ignore_errors=True)
    times = []
    start = time.perf_counter()
    result = batch(manifest, "demo", out, executor=executor, resamples=2000, progress=False,
                   on_result=lambda r: times.append(time.perf_counter()))
    total = time.perf_counter() - start
    assert not result.failed, result.failed
    n = len(result.computed)
    warm = times[workers - 1]
    return {"seconds": times[-1] - start, "tables": total - (times[-1] - start), "n": n,
            "steady": 60.0 * (n - workers) / (times[-1] - warm), "per_case": (out / "per_case.csv").read_bytes()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="12 cases (default 6)")
    args = parser.parse_args()
    n = 12 if args.full else 6
    t = time.perf_counter()
    manifest = cohort(n)
    print(f"cohort: {n} phantom cases of {SIZE[0]}x{SIZE[1]}x{SIZE[2]} ({time.perf_counter() - t:.1f} s to make or find)")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    work = Path(tempfile.mkdtemp(prefix="si-bench-batch-"))
    results = {}
    try:
        results["local, 1 worker"] = timed_run(manifest, InProcessExecutor(), work / "local1", 1)
        results["local, 2 workers"] = timed_run(manifest, ProcessPoolCaseExecutor(2), work / "local2", 2)
        try:
            import ray
        except ImportError:
            print("ray is not installed (pip install 'saliency-inspector[ray]'): Ray run skipped")
        else:
            t = time.perf_counter()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            print(f"ray.init (local, 2 CPUs): {time.perf_counter() - t:.1f} s (not counted)")
            try:
                results["Ray, 2 actors"] = timed_run(manifest, RayExecutor(workers=2), work / "ray2", 2)
            finally:
                ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"{'executor':<18} {'cases':>5} {'seconds':>8} {'cases/min':>9} {'steady cases/min':>16} {'tables s':>8}")
    for name, r in results.items():
        print(f"{name:<18} {r['n']:>5} {r['seconds']:>8.1f} {60 * r['n'] / r['seconds']:>9.2f} {r['steady']:>16.2f} "
              f"{r['tables']:>8.1f}")
    one, two = results["local, 1 worker"], results["local, 2 workers"]
    print(f"2 local workers vs 1: {one['seconds'] / two['seconds']:.2f}x end to end, "
          f"{two['steady'] / one['steady']:.2f}x steady (goal >= 1.6x)")
    if "Ray, 2 actors" in results:
        ray_run = results["Ray, 2 actors"]
        print(f"Ray overhead vs 2 local workers: {100 * (ray_run['seconds'] / two['seconds'] - 1):+.1f} % end to end, "
              f"{100 * (two['steady'] / ray_run['steady'] - 1):+.1f} % steady (goal <= 15 %)")
        same = ray_run["per_case"] == two["per_case"]
        print(f"Ray and 2 local workers give identical per_case.csv: {same}")
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
