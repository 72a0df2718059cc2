"""Every method on a `.pt2` exported the default way (``torch.export.export(model, (x,))``: batch fixed at 1).

Estimators that batch steps or samples internally (IG, SmoothGrad/VarGrad, occlusion, XRAI-3D,
ScoreCAM, AblationCAM) used to crash on such a program with Captum's 32 steps at once ("Expected
input at *args[0].shape[0] to be equal to 1, but got 32"); they now read the static batch from
the program (models.loaders.static_batch), send batches of 1 and say so in their info.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from saliency_inspector.explainers import memory
from saliency_inspector.explainers.registry import METHODS
from saliency_inspector.io.volume import Volume
from saliency_inspector.models.loaders import load_classifier, static_batch

BATCHING = ("smoothgrad", "smoothgrad_sq", "vargrad", "ig", "occlusion", "xrai3d", "scorecam", "ablationcam")
SETTINGS = {"steps": 4, "samples": 3, "occlusion_window_mm": 4.0, "occlusion_stride_mm": 4.0,
            "xrai_scales": (4,), "memory_gb": 1.0}


class ExportNet(nn.Module):
    """conv → ReLU → conv → ReLU → flatten → linear on 8×8×8 inputs, 3 classes (biases everywhere)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(),
                                      nn.Conv3d(4, 4, 3, padding=1, stride=2), nn.ReLU())
        self.head = nn.Linear(4 * 4 * 4 * 4, 3)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A default export (static batch 1) loaded the way the CLI loads it, and a small CT for it."""
    path = tmp_path_factory.mktemp("pt2") / "net.pt2"
    torch.export.save(torch.export.export(ExportNet().eval(), (torch.zeros(1, 1, 8, 8, 8),)), str(path))
    clf = load_classifier(path, device="cpu")
    rng = np.random.default_rng(0)
    ct = Volume(rng.normal(0, 300, (8, 8, 8)).astype(np.float32), spacing=(2.0, 2.0, 2.0))
    return clf, ct


def test_the_static_batch_is_read_from_the_program(exported):
    clf, _ct = exported
    assert static_batch(clf.module) == 1
    assert static_batch(ExportNet()) is None  # a plain module takes any batch
    with pytest.raises(RuntimeError, match="Expected input"):  # what the estimators used to run into
        clf.module(torch.zeros(2, 1, 8, 8, 8))


# the model's own maps (attention gates) need a gated model: test_attention.py runs them on a .pt2
@pytest.mark.parametrize("method", [m for m, e in METHODS.items() if m != "fullgrad" and e.family != "model"])
def test_every_method_runs_on_a_default_export_and_says_when_it_was_batched_one_by_one(exported, method):
    from saliency_inspector.explainers.explanation import explain

    clf, ct = exported
    res = explain(clf, ct, methods=[method], classes=[0], settings=SETTINGS)
    volume = res.map(method, "0")
    assert volume.shape == ct.shape and np.isfinite(volume.array).all()
    if method in BATCHING:
        info = res.predictions()["estimators"][method]["0"]
        assert info["batch"] == 1 and info["batch_limit"] == 1 and "one at a time" in info["batch_note"]


def test_a_guard_the_loader_could_not_see_is_caught_once_and_remembered(exported):
    """An exported program wrapped in another module hides its graph: the first refused batch is
    caught, the work redone one sample at a time, and the model remembered."""
    from saliency_inspector.explainers.attribution import attribute

    clf, _ct = exported
    wrapped = nn.Sequential(clf.module)
    assert static_batch(wrapped) is None
    x = torch.rand(1, 1, 8, 8, 8)
    out = attribute("ig", wrapped, x, 0, {"steps": 4, "baseline": "min"})
    assert out.info["batch"] == 1 and out.info["batch_limit"] == 1
    assert memory.batch_limit(wrapped) == 1
    ref = attribute("ig", ExportNet().eval(), x, 0, {"steps": 4, "baseline": "min"})
    torch.testing.assert_close(out.map, ref.map, rtol=1e-4, atol=1e-6)


def test_fullgrad_on_an_export_says_why_in_one_line(exported):
    """An exported graph keeps no nn.Conv/BatchNorm modules, so FullGrad cannot find the biases."""
    from saliency_inspector.errors import InputError
    from saliency_inspector.explainers.explanation import explain

    clf, ct = exported
    with pytest.raises(InputError, match="torch.export .pt2 keeps only its graph"):
        explain(clf, ct, methods=["fullgrad"], classes=[0], settings=SETTINGS)
