"""evaluate() of a smooth map and of a voxel-wise map against a 117-label labelmap, --region all.

    .venv/bin/python benchmarks/bench_voxelwise.py                # 256 x 256 x 200
    .venv/bin/python benchmarks/bench_voxelwise.py --full         # 512 x 512 x 400 (about 2.5 GB free RAM)

A gradient-type map (``gradient``, ``ig``) has a distinct value in almost every voxel: the ranking
then has as many tie groups as voxels, the worst case for the shared sort (issue 24 measured
22 min 47 s and 5.0 GiB for it at full size before the packed-key ranking). The voxel-wise map here
is float32 Gaussian noise (signed: about half the voxels tie at 0 after the ReLU, as a real signed
gradient); the smooth map is ``bench_metrics.make_map`` (an upsampled coarse field, like a CAM).
The labelmap is the body (an elliptic cylinder) cut into 13 sectors × 9 slabs = 117 labels, one uint8
volume, as ``bench_fullsize.make_case`` does. Each evaluate runs in a fresh process; its time and
its own peak resident set (``os.wait4``; inputs included: map 4 B/voxel, labelmap 1 B/voxel) are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from bench_metrics import make_map
from saliency_inspector.io.segments import Segments
from saliency_inspector.io.volume import Volume
from saliency_inspector.scoring.evaluation import evaluate
nx, ny, nz, kind = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
shape = (nz, ny, nx)
rng = np.random.default_rng(0)
y, x = np.mgrid[0:ny, 0:nx]
body = ((y - ny / 2) ** 2 / (0.4 * ny) ** 2 + (x - nx / 2) ** 2 / (0.45 * nx) ** 2) <= 1
sector = ((np.arctan2(y - ny / 2, x - nx / 2) + np.pi) / (2 * np.pi) * 13).astype(np.uint8) % 13
labels = np.zeros(shape, np.uint8)
for k in range(nz):
    labels[k] = np.where(body, (k * 9 // nz) * 13 + sector + 1, 0)
m = rng.standard_normal(shape, dtype=np.float32) if kind == "voxel-wise" else make_map(shape, rng)
grid = Volume(m, spacing=(0.78, 0.78, 1.0))
segments = Segments.from_layers([labels], [(f"L{i}", 0, i, (0.5, 0.5, 0.5)) for i in range(1, 118)], grid)
t = time.perf_counter()
table = evaluate(grid, segments, region="all", device="cpu")
print(f"{time.perf_counter() - t:.2f} {len(table.rows)}")
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="512 x 512 x 400 instead of 256 x 256 x 200")
    args = parser.parse_args(argv)
    size = (512, 512, 400) if args.full else (256, 256, 200)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    print(f"{size[0]}x{size[1]}x{size[2]}, 117 labels, region all, CPU")
    for kind in ("smooth", "voxel-wise"):
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(HERE), *map(str, size), kind],
                                 stdout=subprocess.PIPE, text=True, env=env)
        _pid, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        out = child.stdout.read().split()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{kind}: the child failed")
        print(f"{kind:<11} evaluate {float(out[0]):6.1f} s ({out[1]} rows; process {wall:.0f} s with making the "
              f"inputs), peak RSS {usage.ru_maxrss / 1024:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
