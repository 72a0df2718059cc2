"""Memory guard: explain + save + evaluate hold only a few CT-sized float arrays at once.

Raw maps stay at feature resolution and go onto the CT grid one at a time, so all 8 maps (4 classes
× HiResCAM and Grad-CAM) of a CT cost about one CT-sized float32 array at a time, not eight. Run in
a fresh process on a mid-size phantom; two independent counts, in units of one float32 array of the
CT's size: the peak of numpy allocations (tracemalloc, which numpy reports to) and the rise of the
process's peak resident memory (which also sees torch and ITK buffers). The full-size figures come
from benchmarks/bench_fullsize.py.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a fresh process on a mid-size phantom: seconds

SCRIPT = r"""
import json, resource, sys, tracemalloc
import numpy as np
import torch
import saliency_inspector as si
from saliency_inspector.scoring.evaluation import evaluate
from saliency_inspector.io.segments import Segments
from saliency_inspector.models.demo_model import demo_classifier

torch.set_num_threads(2)
ct = si.read_volume(sys.argv[2])
organs = si.read_segments(sys.argv[3], reference=ct)
clf = demo_classifier(device="cpu")
unit = ct.array.size * 4
peak_rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
rss_before = peak_rss()
tracemalloc.start()
base = tracemalloc.get_traced_memory()[0]
res = si.explain(clf, ct, methods=["hirescam", "gradcam"], classes="all")
res.save(sys.argv[1])
table = evaluate(res.map("hirescam", "liver"), organs, ct=ct)
numpy_peak = tracemalloc.get_traced_memory()[1] - base
tracemalloc.stop()
print(json.dumps({"maps": len(res.raw), "rows": len(table.rows), "numpy_units": numpy_peak / unit,
                  "rss_units": (peak_rss() - rss_before) / unit}))
"""


def test_explain_save_evaluate_hold_few_ct_sized_arrays(tmp_path):
    from saliency_inspector.synth.phantom import make_phantom, write_phantom_case

    paths = write_phantom_case(make_phantom(seed=1, size=(256, 256, 112)), tmp_path / "case")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "maps"), str(paths["ct"]),
                          str(paths["organs"])], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["maps"] == 8 and result["rows"] == 9  # 10 organs, the body is the region
    assert len(list(Path(tmp_path / "maps").glob("*.nrrd"))) == 8
    # 8 maps held on the CT grid at once would be 8 units on their own
    assert result["numpy_units"] <= 5.0, result
    assert result["rss_units"] <= 6.5, result
