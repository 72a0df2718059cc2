"""pull + explain + push against a throwaway Orthanc vs the same explain from a local NRRD, same run.

    PYTHONPATH=SaliencyInspector python docs/pacs2_timing.py 256 256 160

Needs Debian's orthanc + orthanc-dicomweb. Prints one table row (seconds, ratio, object sizes)."""

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SaliencyInspector" / "Testing" / "Python"))
from dicom_series import write_dicom_series  # noqa: E402
from orthanc_server import _plugin, free_port  # noqa: E402

from saliency_inspector.cli import main  # noqa: E402
from saliency_inspector.io import dicomweb  # noqa: E402
from saliency_inspector.io.volume import write_volume  # noqa: E402
from saliency_inspector.synth.phantom import make_phantom  # noqa: E402

size = tuple(int(v) for v in sys.argv[1:4]) if len(sys.argv) > 3 else (256, 256, 160)
work = Path(tempfile.mkdtemp(prefix="pacs2-timing-"))
case = make_phantom(seed=0, size=size, lesions=["liver"], lesion_scale=1.8)
ct = case.ct.with_array(case.ct.array.astype(np.int16))
nrrd = write_volume(ct, work / "ct.nrrd")
series = write_dicom_series(ct, work / "series")
port = free_port()
config = {"Name": "timing", "HttpPort": port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
          "DicomServerEnabled": False, "StorageDirectory": str(work / "s"), "IndexDirectory": str(work / "i"),
          "Plugins": [_plugin()], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
(work / "config.json").write_text(json.dumps(config))
server = subprocess.Popen(["/usr/sbin/Orthanc", str(work / "config.json")], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
url = f"http://127.0.0.1:{port}/dicom-web"
try:
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/system", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    dicomweb.push(url, sorted(series.iterdir()))
    common = ["--model", "demo", "--method", "hirescam", "--class", "liver", "--device", "cpu"]
    t = time.perf_counter()
    assert main(["explain", str(nrrd), *common, "--out", str(work / "local")]) == 0
    local = time.perf_counter() - t
    t = time.perf_counter()
    assert main(["explain", "--dicomweb", url, "--study", "1.2.826.0.1.3680043.2.1125.1.41", *common, "--push",
                 "--out", str(work / "pacs")]) == 0
    pacs = time.perf_counter() - t
    sizes = {p.name: p.stat().st_size for p in sorted((work / "pacs" / "dicom").iterdir())}
    ct_mb = sum(p.stat().st_size for p in series.iterdir()) / 1e6
    print(f"| {'×'.join(map(str, size))} | {local:.1f} | {pacs:.1f} | {pacs / local:.2f} | {ct_mb:.1f} | "
          + ", ".join(f"{n} {b / 1e6:.2f} MB" for n, b in sizes.items()) + " |")
finally:
    server.terminate()
    server.wait()
