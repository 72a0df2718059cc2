"""Write data/gradcam_peer_2d.npz: pytorch-grad-cam's raw maps on `toy_models.PeerNet2d`, for test_cam_family.

pytorch-grad-cam cannot be installed beside this project's torch (it pulls torchvision and a CUDA
torch), so its source files are loaded directly, without its package ``__init__`` (which imports
every module), with stubs for what the compared code paths do not use: ``ttach`` (aug_smooth),
``torchvision`` (image preprocessing) and ``cv2`` (only ``cv2.resize``, used by FullGrad to bring
each bias map to the input size: stubbed by torch's bilinear resampling with half-pixel centres,
the rule of cv2's INTER_LINEAR). The values are the peer's maps BEFORE its ReLU and min-max scaling
(``get_cam_image`` / ``get_cam_weights`` / FullGrad's ``compute_cam_per_layer``), one per class.

Usage (the source from ``git archive`` of github.com/jacobgil/pytorch-grad-cam, 1.5.5 here)::

    PYTHONPATH=SaliencyInspector python SaliencyInspector/Testing/Python/make_gradcam_peer_values.py /path/to/src
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

OUT = Path(__file__).parent / "data" / "gradcam_peer_2d.npz"
CLASSES = 5


def load_peer(src: Path):
    """The peer's modules by file, its package __init__ skipped, with the stubs described above."""

    def resize(img, size):  # cv2.resize(img, (width, height)), INTER_LINEAR
        t = torch.from_numpy(np.ascontiguousarray(img, np.float32))[None, None]
        return F.interpolate(t, size=(size[1], size[0]), mode="bilinear", align_corners=False)[0, 0].numpy()

    def unused(*_args, **_kwargs):  # ttach's transforms: only aug_smooth uses them
        return None

    stubs = {"cv2": dict(resize=resize, COLORMAP_JET=2), "ttach": dict(Compose=unused, HorizontalFlip=unused, Multiply=unused),
             "torchvision": {}, "torchvision.transforms": dict(Compose=object, Normalize=object, ToTensor=object)}
    for name, attrs in stubs.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module
    package = types.ModuleType("pytorch_grad_cam")
    package.__path__ = [str(src / "pytorch_grad_cam")]
    sys.modules["pytorch_grad_cam"] = package
    names = ["grad_cam", "hirescam", "grad_cam_elementwise", "xgrad_cam", "layer_cam", "eigen_cam",
             "eigen_grad_cam", "kpca_cam", "fem", "shapley_cam", "score_cam", "ablation_cam", "fullgrad_cam"]
    mods = {n: importlib.import_module(f"pytorch_grad_cam.{n}") for n in names}
    package.GradCAM = mods["grad_cam"].GradCAM  # finer_cam imports it from the package
    mods["finer_cam"] = importlib.import_module("pytorch_grad_cam.finer_cam")
    mods["targets"] = importlib.import_module("pytorch_grad_cam.utils.model_targets")
    return mods


def peer_values(mods, model, x) -> dict:
    """{f"{method}__{class}": raw map (H, W)} for every compared method and class."""
    T = mods["targets"]
    layer = model.features
    out = {}

    def raw(cls, c, eigen_smooth=False, **kw):
        cam = cls(model, [layer], **kw)
        outputs = cam.activations_and_grads(x)
        if cam.uses_gradients:
            model.zero_grad()
            outputs[:, c].sum().backward(retain_graph=True)
        A = cam.activations_and_grads.activations[0].numpy()
        G = cam.activations_and_grads.gradients[0].numpy() if cam.uses_gradients else None
        result = cam.get_cam_image(x, layer, [T.ClassifierOutputTarget(c)], A, G, eigen_smooth)
        cam.activations_and_grads.release()
        return result[0], A

    plain = {"hirescam": mods["hirescam"].HiResCAM, "gradcam": mods["grad_cam"].GradCAM,
             "gradcam_elementwise": mods["grad_cam_elementwise"].GradCAMElementWise,
             "xgradcam": mods["xgrad_cam"].XGradCAM, "layercam": mods["layer_cam"].LayerCAM,
             "eigencam": mods["eigen_cam"].EigenCAM, "eigengradcam": mods["eigen_grad_cam"].EigenGradCAM,
             "kpcacam": mods["kpca_cam"].KPCA_CAM, "fem": mods["fem"].FEM}
    for c in range(CLASSES):
        for name, cls in plain.items():
            out[f"{name}__{c}"], A = raw(cls, c)
        for name in ("gradcam", "layercam", "gradcam_elementwise"):
            out[f"{name}_eigen_smooth__{c}"], _ = raw(plain[name], c, eigen_smooth=True)
        out[f"kpcacam_rbf__{c}"], _ = raw(plain["kpcacam"], c, kernel="rbf", gamma=0.5)
        out[f"fem_k1__{c}"], _ = raw(plain["fem"], c, k=1)
        # Finer-CAM: FinerCAM.forward up to compute_cam_per_layer, with target_idx=c
        finer = mods["finer_cam"].FinerCAM(model, [layer])
        outputs = finer.base_cam.activations_and_grads(x)
        data = outputs.detach().numpy()
        order = np.argsort(np.abs(data - data[:, c][:, None]), axis=-1)
        target = T.FinerWeightedTarget(int(order[0, 0]), [int(order[0, i]) for i in (1, 2, 3)], 1.0)
        model.zero_grad()
        target(outputs[0]).backward(retain_graph=True)
        aag = finer.base_cam.activations_and_grads
        out[f"finercam__{c}"] = finer.base_cam.get_cam_image(x, layer, [target], aag.activations[0].numpy(),
                                                             aag.gradients[0].numpy(), False)[0]
        aag.release()
        # Shapley-CAM: the peer's forward with detach=False (graph kept for the Hessian-vector product)
        shap = mods["shapley_cam"].ShapleyCAM(model, [layer])
        xi = x.clone().requires_grad_(True)
        outputs = shap.activations_and_grads(xi)
        torch.autograd.grad(outputs[:, c].sum(), xi, retain_graph=True, create_graph=True)
        aag = shap.activations_and_grads
        out[f"shapleycam__{c}"] = shap.get_cam_image(xi, layer, [T.ClassifierOutputTarget(c)], aag.activations[0],
                                                     aag.gradients[0], False)[0]
        aag.release()
        # Score-CAM / Ablation-CAM: the peer's channel weights, then Σ_k w_k A_k
        for name, cls in (("scorecam", mods["score_cam"].ScoreCAM), ("ablationcam", mods["ablation_cam"].AblationCAM)):
            cam = cls(model, [layer])
            w = cam.get_cam_weights(x, layer, [T.ClassifierOutputTarget(c)], A, None)
            out[f"{name}__{c}"] = (np.asarray(w)[:, :, None, None] * A).sum(1)[0]
            cam.activations_and_grads.release()
        # FullGrad: the per-layer sum before the final scaling
        full = mods["fullgrad_cam"].FullGrad(model, [])
        xi = x.clone().requires_grad_(True)
        outputs = full.activations_and_grads(xi)
        model.zero_grad()
        outputs[:, c].sum().backward()
        out[f"fullgrad__{c}"] = full.compute_cam_per_layer(xi, [T.ClassifierOutputTarget(c)], False)[0, 0]
        full.activations_and_grads.release()
    return out


def main(src):
    sys.path.insert(0, str(Path(__file__).parent))
    from toy_models import PeerNet2d

    mods = load_peer(Path(src))
    model = PeerNet2d()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    values = peer_values(mods, model, x)
    state = {f"state__{k}": v.numpy() for k, v in model.state_dict().items()}
    OUT.parent.mkdir(exist_ok=True)
    np.savez_compressed(OUT, x=x.numpy(), **state, **{f"peer__{k}": np.float32(v) for k, v in values.items()})
    print(f"{OUT}: {len(values)} maps")


if __name__ == "__main__":
    main(sys.argv[1])
