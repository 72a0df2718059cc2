"""The CAM family equal to pytorch-grad-cam 1.5.5 on 5-D inputs (a 3-D network, non-cubic grid).

The peer's values were made by make_gradcam_peer_values_3d.py from its source files loaded directly
(the peer cannot be installed beside this torch) and are kept in data/gradcam_peer_3d.npz: raw maps
before its ReLU/min-max for every method whose 5-D path runs, and the peer's full output (ReLU,
min-max, ``scipy.ndimage.zoom`` to the input) for HiResCAM and Grad-CAM.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from toy_models import PeerNet3d

from saliency_inspector.explainers.cam import compute_cams

PEER = np.load(Path(__file__).parent / "data" / "gradcam_peer_3d.npz")
CLASSES = range(5)
METHODS = ["hirescam", "gradcam", "gradcam_elementwise", "layercam", "xgradcam", "eigencam", "eigengradcam"]
SIGN_FREE = ("eigencam", "eigengradcam")  # an SVD's sign is arbitrary: the peer keeps LAPACK's


@pytest.fixture(scope="module")
def result():
    model = PeerNet3d()
    model.load_state_dict({k[len("state__"):]: torch.from_numpy(PEER[k]) for k in PEER.files if k.startswith("state__")})
    x = torch.from_numpy(PEER["x"])
    return compute_cams(model.eval(), x, methods=METHODS, layer="features"), x


def relative_error(ours, peer, sign_free=False):
    ours, peer = np.asarray(ours, np.float64), np.asarray(peer, np.float64)
    assert ours.shape == peer.shape
    scale = max(np.abs(peer).max(), 1e-12)
    err = np.abs(ours - peer).max() / scale
    return min(err, np.abs(ours + peer).max() / scale) if sign_free else err


def test_raw_maps_equal_the_peer_on_5d_inputs_for_every_class_from_one_pass(result):
    cams, _x = result
    assert tuple(cams.maps["hirescam"].shape) == (1, 5, 3, 4, 5)
    for m in METHODS:
        for c in CLASSES:
            err = relative_error(cams.maps[m][0, c], PEER[f"peer__{m}__{c}"], m in SIGN_FREE)
            assert err < 1e-5, (m, c, err)


def test_the_peers_xgradcam_is_2d_only_and_ours_sums_over_every_voxel():
    # pytorch_grad_cam/xgrad_cam.py sums activations over axes (2, 3): on 5-D input its map has a
    # spurious leading axis; the expected values came from its code on the same numbers viewed as 4-D
    assert "give a map of shape (6, 3, 4, 5)" in str(PEER["error__xgradcam"])


def test_the_peers_displayed_map_is_our_raw_map_relu_min_max_and_zoomed(result):
    """What the peer shows on the input grid (base_cam.py: ReLU, scale_cam_image's min-max and
    scipy zoom (cubic spline) by the reversed (depth, width, height) target size, then ReLU and
    min-max once more in aggregate_multi_layers) is our raw map through the same steps: the axes of
    a non-cubic 3-D map are kept in the same order."""
    from scipy.ndimage import zoom

    cams, x = result
    for m in ("hirescam", "gradcam"):
        for c in CLASSES:
            img = np.maximum(cams.maps[m][0, c].numpy(), 0)
            img = img - img.min()
            img = img / (1e-7 + img.max())
            shown = zoom(np.float32(img), [t / s for s, t in zip(img.shape, x.shape[2:])])
            shown = np.maximum(shown, 0)  # aggregate_multi_layers: ReLU and min-max again after the
            shown = (shown - shown.min()) / (1e-7 + (shown - shown.min()).max())  # spline's overshoot
            peer = PEER[f"full__{m}__{c}"]
            assert shown.shape == peer.shape == tuple(x.shape[2:])
            assert np.abs(shown - peer).max() < 1e-5, (m, c)
