"""Render docs/slicer-screenshot.png from real MRML views (slicer-core, offscreen, no Qt).

The same glue the Slicer module uses (saliency_inspector.mrml) builds the scene: the phantom CT,
its organ segmentation, HiResCAM and Grad-CAM maps of the demo classifier for the lesion class,
the heat overlay in two axial slice views (HiResCAM left, Grad-CAM right, as the module's compare
layout), volume rendering beside the organ surfaces in 3D, and the metrics table node.

    .venv/bin/python docs/make_slicer_screenshot.py [--out docs/slicer-screenshot.png] [--model demo]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SaliencyInspector" / "Testing" / "Python"))

import offscreen_views as ov  # noqa: E402  (sets the EGL window before VTK renders)

from saliency_inspector.scoring import evaluation, metrics  # noqa: E402

from saliency_inspector import mrml, mrml_charts  # noqa: E402
from saliency_inspector.models.demo_model import LESION_SCALE  # noqa: E402
from saliency_inspector.explainers.explanation import explain  # noqa: E402
from saliency_inspector.explainers.registry import method_label  # noqa: E402
from saliency_inspector.models.demo_model import demo_classifier  # noqa: E402
from saliency_inspector.models.loaders import load_classifier  # noqa: E402
from saliency_inspector.synth.phantom import make_phantom, write_phantom_case  # noqa: E402


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "slicer-screenshot.png")
    parser.add_argument("--model", default="demo", help="demo, or a model file/folder for load_classifier")
    parser.add_argument("--size", type=int, nargs=3, default=(160, 160, 56), help="phantom voxels x y z")
    parser.add_argument("--view", type=int, default=420, help="pixels per view")
    args = parser.parse_args(argv)

    case = make_phantom(seed=0, size=tuple(args.size), lesions=["liver"], lesion_scale=LESION_SCALE)
    lesion = case.info["lesions"][0]
    class_name = lesion["organ"]
    classifier = demo_classifier("cpu") if args.model == "demo" else load_classifier(args.model, device="cpu")

    app = ov.make_app()
    (red, yellow), threed = ov.make_views(app, size=(args.view, args.view), slice_tags=("Red", "Yellow"))
    scene = app.scene
    with tempfile.TemporaryDirectory() as folder:
        # the organs go through the .seg.nrrd file and Slicer's reader, as in the application
        paths = write_phantom_case(case, folder)
        ct_node = mrml.add_volume_node(scene, case.ct, "Phantom CT")
        ct_display = ct_node.GetDisplayNode()
        ct_display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
        ct_display.AutoWindowLevelOff()
        ct_display.SetWindowLevel(400, 40)
        ct = mrml.volume_from_node(ct_node)
        result = explain(classifier, ct, methods=("hirescam", "gradcam"), classes=[class_name])
        inferno = add_inferno_color_node(scene)
        nodes = {}
        for method in ("hirescam", "gradcam"):
            saliency = result.map(method, class_name)
            node = mrml.add_saliency_node(scene, saliency, ct_node, f"{method_label(method)} {class_name}", ct=ct)
            window = mrml.display_window(saliency)
            mrml.set_saliency_display(node, window, threshold=0.25, color_node_id=inferno)
            nodes[method] = (node, window, saliency)
        # slice layers before any segmentation exists (see offscreen_views / the probe)
        mrml.show_in_slice_views(scene, ct_node, nodes["hirescam"][0], opacity=0.55, view_names=["Red"])
        mrml.show_in_slice_views(scene, ct_node, nodes["gradcam"][0], opacity=0.55, view_names=["Yellow"])
        seg_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Organs")
        storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
        storage.SetFileName(str(paths["organs"]))
        storage.ReadData(seg_node)
        seg_node.CreateDefaultDisplayNodes()
        for hidden in ("body",):
            segment_id = seg_node.GetSegmentation().GetSegmentIdBySegmentName(hidden)
            if segment_id:
                seg_node.GetDisplayNode().SetSegmentVisibility(segment_id, False)
        mrml.show_segmentation(seg_node, opacity_3d=0.3)
        node, window, saliency = nodes["hirescam"]
        mrml.setup_volume_rendering(node, app.volume_rendering._logic, window, threshold=0.25, max_opacity=0.8)

        lesion_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Lesions")
        storage.SetFileName(str(paths["lesions"]))
        storage.ReadData(lesion_node)
        lesion_node.CreateDefaultDisplayNodes()
        mrml.show_segmentation(lesion_node, opacity_3d=1.0)
        lesion_node.GetDisplayNode().SetSliceIntersectionThickness(2)

        # score against organs and lesion together (masks from the nodes, on the CT grid)
        masks = mrml.segments_from_node(seg_node, ct_node, app.segmentations_logic).masks
        lesion_masks = mrml.segments_from_node(lesion_node, ct_node, app.segmentations_logic).masks
        table = evaluation.evaluate(saliency, {**masks, **lesion_masks}, region="auto", ct=ct)
        table_node = mrml_charts.add_metrics_table(scene, table.rows, metrics_info=metrics.METRICS)

    lesion_ras = np.array(lesion["center_lps"]) * [-1, -1, 1]
    frames = []
    for view in (red, yellow):
        view.fit_view_to_content()
        ov.jump_to(view, lesion_ras)
        view.zoom(1.25)
        view.render()
        frames.append(ov.capture(view))
    threed.set_background_color([20, 20, 30])
    ov.frame_3d(threed, elevation=25, azimuth=-35, zoom=1.5)
    threed.render()
    frames.append(ov.capture(threed))

    probabilities = dict(zip(result.class_names, result.probabilities))
    compose(frames, mrml_charts.table_columns(table_node), args.out,
            titles=[f"HiResCAM · {class_name}", f"Grad-CAM · {class_name}", "3D: HiResCAM + organ surfaces"],
            subtitle=f"phantom CT with a liver lesion; model {classifier.card.name!r}: p({class_name}) = "
                     f"{probabilities[class_name]:.2f}; region: {table.region}")
    for view in (red, yellow, threed):
        view.finalize()
    print(f"wrote {args.out}")
    return args.out


def add_inferno_color_node(scene) -> str:
    """Slicer's default saliency colours (the Inferno file table of the Slicer app, which bare
    slicer-core lacks), rebuilt from matplotlib's identical inferno map."""
    from matplotlib import colormaps

    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "Inferno")
    node.SetTypeToUser()
    node.SetNumberOfColors(256)
    node.GetLookupTable().SetTableRange(0, 255)
    for i in range(256):
        r, g, b, _a = colormaps["inferno"](i / 255)
        node.SetColor(i, f"inferno{i}", r, g, b, 1.0)
    return node.GetID()


def compose(frames, columns, out: Path, titles, subtitle) -> None:
    """The three views side by side with captions, the metrics table node's rows below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(13.5, 6.4), dpi=100, facecolor="#1b1b24")
    for i, (frame, title) in enumerate(zip(frames, titles)):
        ax = fig.add_axes([0.005 + i * 0.333, 0.30, 0.325, 0.62])
        ax.imshow(frame)
        ax.set_title(title, color="white", fontsize=12)
        ax.axis("off")
    fig.text(0.5, 0.965, "SaliencyInspector in 3D Slicer (MRML views rendered offscreen)", color="white",
             ha="center", fontsize=14, weight="bold")
    fig.text(0.5, 0.265, subtitle, color="#c8c8d0", ha="center", fontsize=10)
    keys = ["segment", "dice", "roc_auc", "auprc", "ioa", "mass_in_mask", "pointing_game"]
    heads = ["segment", "Dice", "ROC AUC", "AUPRC", "IoA", "mass in mask", "pointing"]
    # the lesion and its organ first, then the organs the map favours most
    first = [i for i, name in enumerate(columns["segment"]) if name.startswith("lesion_") or name == "liver"]
    rest = [i for i in np.argsort([-v if np.isfinite(v) else 1 for v in columns["roc_auc"]]) if i not in first]
    order = (first + rest)[:6]
    cells = [[columns["segment"][i]] + [_fmt(columns[k][i]) for k in keys[1:]] for i in order]
    ax = fig.add_axes([0.12, 0.01, 0.76, 0.23])
    ax.axis("off")
    tab = ax.table(cellText=cells, colLabels=heads, loc="center", cellLoc="center")
    tab.auto_set_font_size(False)
    tab.set_fontsize(9.5)
    for (row, _col), cell in tab.get_celld().items():
        cell.set_facecolor("#2a2a36" if row else "#3a3a4a")
        cell.set_edgecolor("#555566")
        cell.get_text().set_color("white")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, facecolor=fig.get_facecolor())
    plt.close(fig)


def _fmt(value) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.2f}"


if __name__ == "__main__":
    main()
