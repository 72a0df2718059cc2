"""Measure the scene's memory for the maps of one Apply on a large phantom (issue 21, item 6).

Runs the Slicer module's Logic on real MRML (slicer-core) with the stand-ins, makes the phantom,
explains it (HiResCAM + Grad-CAM, every class of the demo model: 8 maps), shows the top class's
map and the comparison, then prints one JSON line:

- ``scene_image_mb``: the sum of ``GetImageData().GetActualMemorySize()`` over every volume node
  (the CT, the maps, the views' shared nodes);
- ``map_image_mb``: the same over the saliency nodes only;
- ``peak_rss_mb``: the process's peak RSS (VmHWM) from after the phantom was made to the end
  (the peak is reset with /proc/self/clear_refs before explaining);
- ``rss_mb``: the RSS at the end.

    PYTHONPATH=SaliencyInspector python SaliencyInspector/Testing/Python/slicer_scene_memory.py \\
        --size 512 512 400 [--module-dir DIR]

``--module-dir`` imports ``SaliencyInspector.py`` from another folder (e.g. the version before
maps on demand, written there by ``git show <commit>:SaliencyInspector/SaliencyInspector.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=(512, 512, 400), help="phantom voxels x y z")
    parser.add_argument("--module-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    from _pytest.monkeypatch import MonkeyPatch

    import offscreen_views as ov
    import slicer_standins

    monkeypatch = MonkeyPatch()
    app = ov.make_app()
    slicer_standins.install(monkeypatch, app, Path(tempfile.mkdtemp()))
    if args.module_dir is not None:  # after install(), which puts the module's own folder first
        sys.path.insert(0, str(args.module_dir))
    import SaliencyInspector as module

    logic = module.SaliencyInspectorLogic()
    ct, organs = logic.loadPhantomSample(size=tuple(args.size))
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS: measure the maps, not the phantom
    start = time.perf_counter()
    nodes, explanation, predictions = logic.explain(ct, model="demo", methods=("hirescam", "gradcam"), device="cpu")
    shown = nodes[("hirescam", explanation.class_names[0])]
    logic.show(ct, shown, organs)
    logic.showComparison(ct, shown)
    seconds = time.perf_counter() - start

    volumes = app.scene.GetNodesByClass("vtkMRMLVolumeNode")
    total = maps = 0.0
    for i in range(volumes.GetNumberOfItems()):
        node = volumes.GetItemAsObject(i)
        image = node.GetImageData()
        kb = image.GetActualMemorySize() if image is not None else 0
        total += kb
        if node is not ct:
            maps += kb
    result = {"size": list(args.size), "maps": len(nodes), "volume_nodes": volumes.GetNumberOfItems(),
              "scene_image_mb": round(total / 1024, 1), "map_image_mb": round(maps / 1024, 1),
              "peak_rss_mb": round(_status("VmHWM")), "rss_mb": round(_status("VmRSS")),
              "explain_and_show_s": round(seconds, 1),
              "module": str(Path(module.__file__).resolve())}
    print(json.dumps(result))
    monkeypatch.undo()
    return result


if __name__ == "__main__":
    main()
