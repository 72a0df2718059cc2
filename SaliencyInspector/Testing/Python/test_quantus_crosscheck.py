"""Our 3-D Quantus-family metrics equal Quantus 0.6's scores on a 2-D input where Quantus runs.

The expected values ``QUANTUS_0_6`` were made with Quantus 0.6.0 in a throwaway environment by
``quantus_reference.py`` (see its docstring: Quantus is not a dependency); when ``quantus`` can be
imported they are recomputed live too. Our functions are dimension-agnostic (cubes in 3-D are
squares here); every model-calling metric goes through ``model_calls.target_scores``.
Tolerance: 1e-5 relative (Quantus keeps float32 maps).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saliency_inspector.io.volume import Volume
from saliency_inspector.scoring import complexity, faithfulness, robustness
from saliency_inspector.scoring.evaluation import score_masks
from saliency_inspector.scoring.model_calls import target_scores
from saliency_inspector.scoring.quality import QUALITY_METRICS, quality_metric

import quantus_reference as ref

QUANTUS_0_6 = {'avg_sensitivity': 0.11236653178930282,
 'complexity': 5.235937118530273,
 'faithfulness_correlation': 0.01054452359676361,
 'irof': -7.436964154243469,
 'local_lipschitz': 0.4245375692844391,
 'max_sensitivity': 0.11661280691623688,
 'monotonicity_quantus': True,
 'random_logit': 0.1320879505733028,
 'region_perturbation_curve': [0.039770327508449554,
                               0.0583488754928112,
                               0.0508565828204155,
                               0.049566060304641724,
                               0.031371112912893295,
                               0.04192027449607849,
                               0.05835786089301109,
                               0.06528257578611374,
                               0.06708715856075287,
                               0.0657631903886795],
 'relevance_mass_accuracy': 0.19808968901634216,
 'relevance_rank_accuracy': 0.2619047619047619,
 'selectivity_curve': [0.03066730499267578,
                       0.012088756076991558,
                       0.01958104968070984,
                       0.020871572196483612,
                       0.03906651958823204,
                       0.028517359867691994,
                       0.012079771608114243,
                       0.0051550595089793205,
                       0.0033504734747111797,
                       0.004674444440752268,
                       0.0021611216943711042,
                       0.00211861333809793,
                       0.0017443269025534391,
                       0.0013813404366374016,
                       0.0008133414667099714,
                       0.0013014478608965874],
 'sparseness': 0.43325586055916787,
 'top_k_intersection': 0.4}

REL = 1e-5


class _Clf:
    """The reference CNN behind the Classifier interface the metrics use (predict: logits, no grad)."""

    def __init__(self, net, static=False):
        self.net, self.static_batch, self.calls = net, static, []

    def probabilities(self, logits):
        return torch.softmax(logits, dim=-1)  # Quantus's softmax=True

    def predict(self, x):
        self.calls.append(int(x.shape[0]))
        with torch.no_grad():
            return self.net(x)


@pytest.fixture(scope="module")
def case():
    net = ref.model()
    x, y, a, s, segments = ref.inputs()
    return net, x[0], int(y[0]), a[0, 0], s[0, 0].astype(bool), segments


class _QuantusDraws(np.random.RandomState):
    """Quantus's subset draws for a seed: its ``get_baseline_value`` (``quantus/helpers/utils.py``)
    builds every baseline in a dict eagerly, so each perturbation also draws a "uniform" baseline of
    the batch size (1) from the global generator; the same extra draw follows each choice here."""

    def choice(self, n, size, replace=True):
        out = super().choice(n, size, replace=replace)
        self.uniform(0.0, 1.0, size=1)  # batched: one value per sample
        return out


def _close(ours, theirs):
    np.testing.assert_allclose(ours, theirs, rtol=REL, atol=1e-9)


def test_complexity_family_equals_quantus(case):
    _net, _x, _y, a, _s, _seg = case
    _close(complexity.sparseness(np.abs(a)), QUANTUS_0_6["sparseness"])
    _close(complexity.complexity(np.abs(a)), QUANTUS_0_6["complexity"])


def test_localisation_family_in_evaluate_equals_quantus(case):
    """top-k (k = 20 here), rank and mass accuracy, and the map's sparseness/complexity, as ``evaluate``
    computes them from its shared ranking of S⁺ (= |a| for this non-negative map)."""
    from saliency_inspector.scoring import localisation_quantus

    _net, _x, _y, a, s, _seg = case
    pos = np.abs(a)[None]  # (1, 16, 16): a one-slice volume
    row = score_masks(pos, {"m": s[None]}).rows[0]
    _close(row["relevance_rank_accuracy"], QUANTUS_0_6["relevance_rank_accuracy"])
    _close(row["relevance_mass_accuracy"], QUANTUS_0_6["relevance_mass_accuracy"])
    _close(row["sparseness"], QUANTUS_0_6["sparseness"])
    _close(row["complexity"], QUANTUS_0_6["complexity"])
    original = localisation_quantus.TOP_K
    try:
        localisation_quantus.top_k_intersection.__defaults__ = (20,)
        row = score_masks(pos, {"m": s[None]}).rows[0]
    finally:
        localisation_quantus.top_k_intersection.__defaults__ = (original,)
    _close(row["top_k_intersection"], QUANTUS_0_6["top_k_intersection"])


def test_faithfulness_family_equals_quantus(case):
    net, x, y, a, _s, segments = case
    predict = target_scores(_Clf(net), y, per_forward=4)
    _close(faithfulness.faithfulness_correlation(predict, x, a, subset_size=40, runs=30, rng=_QuantusDraws(3)),
           QUANTUS_0_6["faithfulness_correlation"])
    predict = target_scores(_Clf(net), y, per_forward=4, probability=True)  # Quantus's softmax=True
    rp = faithfulness.region_perturbation(predict, x, a, patch=4, regions=10)
    _close(rp["curve"], QUANTUS_0_6["region_perturbation_curve"])
    sel = faithfulness.selectivity(predict, x, a, patch=4)
    _close(sel["curve"], QUANTUS_0_6["selectivity_curve"])
    _close(faithfulness.irof(predict, x, a, segments)["aoc"], QUANTUS_0_6["irof"])


def test_robustness_family_equals_quantus(case):
    net, x, y, _a, _s, _seg = case
    grad = lambda xi, cls=y: ref.gradient_explain(net, xi[None], [cls])[0, 0]  # noqa: E731
    g = grad(x)
    sens = robustness.sensitivity(grad, x, g, samples=5, radius=0.2, rng=np.random.RandomState(5))
    _close(sens["max"], QUANTUS_0_6["max_sensitivity"])
    _close(sens["avg"], QUANTUS_0_6["avg_sensitivity"])
    _close(robustness.local_lipschitz(grad, x, g, samples=5, std=0.1, rng=np.random.RandomState(6)),
           QUANTUS_0_6["local_lipschitz"])
    rl = robustness.random_logit(lambda xi, c: grad(xi, c), x, g, y, ref.CLASSES, seed=42)
    _close(rl["ssim"], QUANTUS_0_6["random_logit"])


def test_live_quantus_when_installed():
    quantus_values = pytest.importorskip("quantus") and ref.compute_with_quantus()
    for key, value in QUANTUS_0_6.items():
        np.testing.assert_allclose(quantus_values[key], value, rtol=1e-6)


class _StaticBatch(_Clf):
    """A model exported with its batch fixed at 1 refuses larger batches, as torch.export's guard does."""

    def predict(self, x):
        if x.shape[0] != 1:
            raise RuntimeError(f"Expected input at *args[0].shape[0] to be equal to 1, but got {x.shape[0]}")
        return super().predict(x)


def test_static_batch_model_gets_batches_of_one(case):
    """A static-batch model gives the same scores, one input at a time, after one refused batch."""
    net, x, y, a, _s, _seg = case
    told = []
    clf = _StaticBatch(net)
    predict = target_scores(clf, y, per_forward=4, note=told.append, probability=True)
    rp = faithfulness.region_perturbation(predict, x, a, patch=4, regions=10)
    _close(rp["curve"], QUANTUS_0_6["region_perturbation_curve"])
    assert set(clf.calls[1:]) == {1} and len(told) == 1 and "batches of 1" in told[0]
    marked = _Clf(net, static=True)  # a loader that knows (issue 24a's detection) never sends more
    faithfulness.selectivity(target_scores(marked, y, per_forward=4), x, a, patch=4)
    assert set(marked.calls) == {1}


def test_from_ranking_equals_array_form_on_a_3d_map_with_ties():
    """evaluate's sparseness/complexity (from the tie groups) equal the array functions, in 3-D."""
    from saliency_inspector.scoring.ranking import Ranking

    rng = np.random.default_rng(4)
    m = np.round(rng.normal(size=(6, 7, 8)), 1).astype(np.float32)  # many ties, half below 0
    got = complexity.from_ranking(Ranking(m, relu=True, device="cpu"))
    _close(got["sparseness"], complexity.sparseness(m, transform="relu"))
    _close(got["complexity"], complexity.complexity(m, transform="relu"))
    body = np.zeros(m.shape, bool)
    body[1:5, 2:6, 1:7] = True  # the domain changes the answer
    assert abs(complexity.sparseness(m, body, "relu") - complexity.sparseness(m, None, "relu")) > 1e-3


def test_registry_describes_every_metric():
    assert {m.family for m in QUALITY_METRICS.values()} == {
        "localisation", "complexity", "faithfulness", "robustness", "randomisation", "axiomatic"}
    assert quality_metric("irof").needs_model and not quality_metric("sparseness").needs_model
    with pytest.raises(KeyError):
        quality_metric("road")
