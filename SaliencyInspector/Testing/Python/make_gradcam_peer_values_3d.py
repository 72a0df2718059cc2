"""Write data/gradcam_peer_3d.npz: pytorch-grad-cam's maps on 5-D inputs (`toy_models.PeerNet3d`).

The peer handles 3-D since 1.5 (``base_cam.py``: ``get_cam_image`` broadcasts 5-D weights,
``get_target_width_height`` returns (depth, width, height) = sizes of axes (-1, -2, -3), and
``utils/image.py`` ``scale_cam_image`` resizes a 3-D cam with ``scipy.ndimage.zoom`` by the factors
of the reversed target size). Its source is loaded directly, as in make_gradcam_peer_values.py
(same stubs; ``scipy.ndimage.zoom`` is real). Stored per class: the raw maps (before ReLU/min-max)
of every method whose 5-D path runs, and the full ``cam(input, targets)`` output of HiResCAM and
Grad-CAM (ReLU, min-max, zoomed to the input). Methods whose 5-D path fails are stored as
``error__<method>``: XGrad-CAM in 1.5.5 sums activations over axes (2, 3) only, and its 5-D map
comes back with a spurious leading axis (6, 3, 4, 5 here); its expected 3-D values are the peer's
own ``get_cam_image`` on the same activations and gradients viewed as 4-D (D·H, W), where its
weights do sum over every voxel.

Usage::

    PYTHONPATH=SaliencyInspector python SaliencyInspector/Testing/Python/make_gradcam_peer_values_3d.py /path/to/src
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from make_gradcam_peer_values import load_peer  # noqa: E402

OUT = Path(__file__).parent / "data" / "gradcam_peer_3d.npz"
CLASSES = 5
RAW = {"hirescam": ("hirescam", "HiResCAM"), "gradcam": ("grad_cam", "GradCAM"),
       "gradcam_elementwise": ("grad_cam_elementwise", "GradCAMElementWise"), "layercam": ("layer_cam", "LayerCAM"),
       "xgradcam": ("xgrad_cam", "XGradCAM"), "eigencam": ("eigen_cam", "EigenCAM"),
       "eigengradcam": ("eigen_grad_cam", "EigenGradCAM")}


def peer_values(mods, model, x) -> dict:
    """{key: array or message}: raw maps, full outputs and the 5-D failures (see the module docstring)."""
    T = mods["targets"]
    layer = model.features
    out = {}
    for c in range(CLASSES):
        for name, (module, cls_name) in RAW.items():
            cam = getattr(mods[module], cls_name)(model, [layer])
            outputs = cam.activations_and_grads(x)
            if cam.uses_gradients:
                model.zero_grad()
                outputs[:, c].sum().backward(retain_graph=True)
            A = cam.activations_and_grads.activations[0].numpy()
            G = cam.activations_and_grads.gradients[0].numpy() if cam.uses_gradients else None
            target = [T.ClassifierOutputTarget(c)]
            try:
                raw = cam.get_cam_image(x, layer, target, A, G, False)[0]
            except Exception as err:  # noqa: BLE001 - the peer's 5-D limits are part of the record
                raw = None
                out[f"error__{name}"] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
            if raw is not None and raw.shape != A.shape[2:]:
                out[f"error__{name}"] = f"5-D activations {A.shape} give a map of shape {raw.shape}"
                raw = None
            if raw is None and name == "xgradcam":
                # the peer's own code on the same numbers seen as 4-D (D*H, W): its weights then sum
                # over every voxel, which is what XGrad-CAM means in 3-D
                flat = (*A.shape[:2], A.shape[2] * A.shape[3], A.shape[4])
                raw = cam.get_cam_image(x, layer, target, A.reshape(flat), G.reshape(flat), False)[0]
                raw = raw.reshape(A.shape[2:])
            if raw is not None:
                out[f"peer__{name}__{c}"] = np.float32(raw)
            cam.activations_and_grads.release()
        for name in ("hirescam", "gradcam"):
            module, cls_name = RAW[name]
            with getattr(mods[module], cls_name)(model, [layer]) as cam:
                out[f"full__{name}__{c}"] = np.float32(cam(x, [T.ClassifierOutputTarget(c)])[0])
    return out


def main(src):
    from toy_models import PeerNet3d

    mods = load_peer(Path(src))
    model = PeerNet3d()
    x = torch.rand(1, 2, 6, 8, 10, generator=torch.Generator().manual_seed(5))
    values = peer_values(mods, model, x)
    state = {f"state__{k}": v.numpy() for k, v in model.state_dict().items()}
    OUT.parent.mkdir(exist_ok=True)
    np.savez_compressed(OUT, x=x.numpy(), **state, **values)
    print(f"{OUT}: {sorted(k for k in values if not k.startswith('peer__'))[:12]} ...")
    for k, v in values.items():
        if k.startswith("error__"):
            print(k, v)


if __name__ == "__main__":
    main(sys.argv[1])
