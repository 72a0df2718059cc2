"""The self-explaining comparison (issue 25): IoA, the randomization verdict, the paired tests, the
page and the ``self-explaining`` command.

Known answers: a gate that IS the lesion mask scores lesion ROC AUC 1, lesion IoA 1 and mass in
organ 1, and its organ IoA under ``topk`` is the tie-share formula worked out by hand; a gate that
does not depend on the weights FAILS the randomization check, a map of fresh noise does not PASS
it; hand-made per-case numbers give PASS and FAIL the right way round; a map that beats another in
every case gets the exact Wilcoxon p; a declared (non-MONAI) gate is found in the randomized copy.
"""

import json

import numpy as np
import pytest
import torch
from torch import nn

from saliency_inspector.cli import main
from saliency_inspector.io.volume import Volume
from saliency_inspector.models.demo_model import DEMO_CLASSES
from saliency_inspector.models.loaders import load_classifier
from saliency_inspector.synth.phantom import make_phantom
from saliency_inspector.workflows.self_explaining import CaseScores, compare_self_explaining, score_case
from saliency_inspector.workflows.self_explaining_table import format_table, randomization_verdicts, summarise

SIZE = (32, 32, 16)  # phantom voxels (x, y, z) = the models' input (16, 32, 32): the input grid is the CT grid


class MaskGate(nn.Module):
    """A gate that is a stored mask on the input grid, whatever the input and the weights."""

    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", torch.as_tensor(mask, dtype=torch.float32)[None, None])

    def forward(self, features):
        return self.mask.expand(features.shape[0], -1, -1, -1, -1)


class BrightGate(nn.Module):
    """A gate open where the windowed input is bright; it has no weights of its own."""

    def forward(self, x):
        return torch.sigmoid(20 * (x - 0.5))


class ConvGate(nn.Module):
    """A gate with weights: sigmoid(conv 1×1×1 (x)), declared on the card (not a MONAI AttentionBlock)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(8.0)
            self.conv.bias.fill_(-4.0)

    def forward(self, x):
        return torch.sigmoid(self.conv(x))


class Gated(nn.Module):
    """input × gate → mean → linear: one logit per demo class."""

    def __init__(self, gate):
        super().__init__()
        self.gate = gate
        self.fc = nn.Linear(1, len(DEMO_CLASSES))

    def forward(self, x):
        return self.fc((x * self.gate(x)).mean((2, 3, 4)))


def _classifier(gate, gates=("gate",), classes=DEMO_CLASSES):
    torch.manual_seed(0)
    card = {"name": "gated", "classes": list(classes), "multilabel": True,
            "input": {"size": [SIZE[2], SIZE[1], SIZE[0]], "window": [-200, 300]}}
    if gates:
        card["attention_gates"] = list(gates)
    return load_classifier(Gated(gate).eval(), card=card, device="cpu")


def _liver_case(seed):
    return make_phantom(seed=seed, size=SIZE, lesions=["liver"], lesion_scale=1.8)


def test_a_gate_that_is_the_lesion_scores_one_on_the_lesion():
    from saliency_inspector.synth.cohort import CLASS_ORGANS

    case = _liver_case(11)
    lesion = case.lesions.mask(case.lesions.names[0])
    clf = _classifier(MaskGate(lesion))
    row = score_case(clf, case, methods=("attention",), steps=3, randomize=False).rows[0]
    assert row["class"] == "liver"
    assert row["lesion_auc"] == pytest.approx(1.0)
    assert row["lesion_ioa"] == pytest.approx(1.0)
    assert row["mass_in_organ"] == pytest.approx(1.0)
    assert row["auc"] > 0.9 and row["sauc"] > 0.9  # the readers look at the lesion, so does the map
    # topk keeps |organ| voxels: the lesion, then a share of the tied zeros; their organ share is the
    # organ's share of the non-lesion body (expected hits of a uniform tie-break)
    body = case.organs.mask("body")
    organ = np.zeros(case.ct.shape, bool)
    for name in CLASS_ORGANS["liver"]:
        organ |= case.organs.mask(name)
    o, les, b = (organ & body).sum(), (lesion & body).sum(), body.sum()
    assert (lesion <= organ).all()
    want = (les + (o - les) * (o - les) / (b - les)) / o
    assert row["organ_ioa"] == pytest.approx(want, rel=1e-9)
    # a map-wide threshold (otsu) keeps exactly the lesion, all of it inside the organ
    otsu = score_case(clf, case, methods=("attention",), steps=3, randomize=False, threshold="otsu").rows[0]
    assert otsu["organ_ioa"] == pytest.approx(1.0) and otsu["lesion_ioa"] == pytest.approx(1.0)


@pytest.fixture
def noise_method():
    """A registered method whose map is fresh noise at every call (seeded by a call counter)."""
    from saliency_inspector.explainers.registry import register_method, unregister_method

    calls = iter(range(10_000))

    def noise(model, x, target):
        g = torch.Generator().manual_seed(next(calls))
        return torch.rand(x.shape[2:], generator=g)

    register_method("test_noise", noise, meaning="non-negative", importance="relu")
    yield "test_noise"
    unregister_method("test_noise")


def test_a_weight_free_gate_fails_randomization_and_noise_does_not_pass(noise_method):
    cases = [_liver_case(seed) for seed in range(21, 27)]  # 6 cases of one class: 15 baseline pairs
    result = compare_self_explaining({"bright": _classifier(BrightGate())}, cases=cases, steps=2,
                                     methods=("attention", noise_method))
    verdicts = {v["method"]: v for v in result["randomization"]}
    gate = verdicts["attention"]
    assert gate["n_cases"] == 6 and gate["n_pairs"] == 15
    assert gate["ssim_per_case"] == pytest.approx([1.0] * 6)  # randomizing the weights left the gate as it was
    assert gate["baseline_ssim"] < 0.99
    assert gate["interval"][0] > 0 and gate["verdict"] == "fail"
    assert verdicts[noise_method]["verdict"] != "pass"
    assert abs(verdicts[noise_method]["estimate"]) < 0.05  # noise vs noise, within a case or across cases


def test_a_gate_with_weights_changes_when_each_case_randomizes_them():
    cases = [_liver_case(seed) for seed in (21, 22, 23)]
    result = compare_self_explaining({"conv": _classifier(ConvGate())}, cases=cases, steps=2, methods=("attention",),
                                     seed=2)
    v = result["randomization"][0]
    assert v["seeds"] == [2000, 2001, 2002]  # one cascading randomization per case, each with its own seed
    assert max(v["ssim_per_case"]) < 0.99  # the gate's weights were redrawn: its map moved in every case


def _scores(ssim, original, cls="liver"):
    body = np.ones(original.shape, bool)
    return CaseScores(rows=[], randomization={"m": {"class": cls, "ssim": ssim, "spearman": 0.0, "blank": False,
                                                     "seed": 0}},
                      input_maps={"m": Volume(original.astype(np.float32))}, body_in=body)


def test_the_randomization_verdict_goes_the_right_way(monkeypatch):
    from saliency_inspector.explainers import registry

    monkeypatch.setitem(registry.METHODS, "m", registry.get_method("hirescam"))
    z, y, x = np.indices((12, 16, 16))
    blob = np.exp(-((z - 6) ** 2 + (y - 8) ** 2 + (x - 8) ** 2) / 20.0)
    # every case's trained map is the same blob (baseline SSIM 1); randomized maps unlike them (SSIM 0.1)
    same = {i: _scores(0.1, blob) for i in range(6)}
    v = randomization_verdicts("model", same, ["m"])[0]
    assert v["baseline_ssim"] == pytest.approx(1.0) and v["verdict"] == "pass" and v["interval"][1] < 0
    # every case's map is its own noise (baseline ≈ 0) and randomization changed nothing (SSIM 1)
    rng = np.random.default_rng(0)
    kept = {i: _scores(1.0, rng.random(blob.shape)) for i in range(6)}
    v = randomization_verdicts("model", kept, ["m"])[0]
    assert v["verdict"] == "fail" and v["interval"][0] > 0
    # different lesion classes never pair: no baseline, no verdict
    mixed = {i: _scores(0.1, blob, cls=c) for i, c in enumerate(DEMO_CLASSES)}
    v = randomization_verdicts("model", mixed, ["m"])[0]
    assert v["verdict"] == "inconclusive" and v["n_pairs"] == 0 and "no two cases" in v["note"]
    # three cases: 3 pairs, below the trust card's minimum of 10
    v = randomization_verdicts("model", {i: _scores(0.1, blob) for i in range(3)}, ["m"])[0]
    assert v["n_pairs"] == 3 and v["verdict"] == "inconclusive"


def _rows(model, method, values, key="organ_auc"):
    from saliency_inspector.workflows.self_explaining import METRICS

    return [{"model": model, "case": i, "method": method, "class": "liver",
             **{k: (v if k == key else 0.5) for k in METRICS},
             "inter_observer": {k: 0.9 for k in ("cc", "sncc", "auc", "sauc")}} for i, v in enumerate(values)]


def test_the_paired_test_is_against_the_models_own_map():
    rng = np.random.default_rng(1)
    low = rng.uniform(0.3, 0.5, 8)
    rows = _rows("gated", "attention", low + 0.3) + _rows("gated", "hirescam", low) + \
        _rows("plain", "hirescam", low) + _rows("plain", "gradcam", low - 0.1)
    summary = summarise(rows, ("attention", "hirescam", "gradcam"))
    by = {(e["model"], e["method"], e["metric"]): e for e in summary}
    test = by[("gated", "hirescam", "organ_auc")]["vs_reference"]
    assert test["reference"] == "attention" and test["mean_difference"] == pytest.approx(0.3)
    assert test["p"] == pytest.approx(2 / 2 ** 8)  # exact: all 8 differences one way
    assert test["p_holm"] == pytest.approx(test["p"])  # one comparison for this model and measure
    plain = by[("plain", "gradcam", "organ_auc")]["vs_reference"]
    assert plain["reference"] == "hirescam" and plain["mean_difference"] == pytest.approx(0.1)
    assert "vs_reference" not in by[("gated", "attention", "organ_auc")]
    assert by[("gated", "readers", "sauc")]["mean"] == pytest.approx(0.9)
    assert ("gated", "readers", "organ_auc") not in by
    entry = by[("gated", "attention", "organ_auc")]
    assert entry["n"] == 8 and entry["ci"][0] <= entry["mean"] <= entry["ci"][1]
    table = format_table(summary, [], {"n_cases": 8, "models_without_gates": ["plain"]})
    assert "| plain | attention | no attention gates: no own map |" in table
    assert f"p={test['p_holm']:.2g}" in next(line for line in table.splitlines() if "| gated | hirescam |" in line)


def test_a_declared_gate_is_found_in_the_randomized_copy():
    from saliency_inspector.explainers.randomization import randomized_maps

    case = _liver_case(11)
    clf = _classifier(ConvGate())
    maps = dict(randomized_maps(clf, case.ct, "attention", "liver", mode="cascading", seed=0))
    assert "gate.conv" in maps
    before, after = maps["original"].volume.array, maps["gate.conv"].volume.array
    assert not np.allclose(before, after)  # the gate's own weights were redrawn: its map changed


def _export(tmp_path, name, gate, gates=("gate",), classes=DEMO_CLASSES):
    clf = _classifier(gate, gates, classes)
    path = tmp_path / f"{name}.pt2"
    torch.export.save(torch.export.export(clf.module, (torch.zeros(1, 1, SIZE[2], SIZE[1], SIZE[0]),)), str(path))
    card = clf.card.to_dict()
    card["name"] = name
    (tmp_path / f"{name}.json").write_text(json.dumps(card))
    return path


@pytest.mark.parametrize("argv, message", [
    (["--models", "no-such-model", "--cases", "2"], "model not found"),
    (["--models", "demo", "--cases", "0"], "--cases must be at least 1"),
    (["--models", "demo", "demo", "--cases", "2"], "given twice"),
    (["--models", "demo", "--threshold", "sometimes"], "not a known rule"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main(["self-explaining", *argv, "--out", str(out)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0]
    assert not out.exists()


def test_a_model_without_the_demo_classes_is_refused(tmp_path, capsys):
    path = _export(tmp_path, "ab", BrightGate(), classes=("a", "b"))
    out = tmp_path / "out"
    assert main(["self-explaining", "--models", str(path), "--cases", "1", "--out", str(out)]) == 2
    assert "not the phantoms' demo classes" in capsys.readouterr().err
    assert not out.exists()


def test_the_command_writes_json_table_and_page(tmp_path, capsys):
    gated = _export(tmp_path, "gated", ConvGate())
    plain = _export(tmp_path, "plain", ConvGate(), gates=())
    out = tmp_path / "out"
    assert main(["self-explaining", "--models", str(gated), str(plain), "--cases", "1", "--fidelity-steps", "2",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "self-explaining.json").read_text())
    assert {e["method"] for e in data["summary"] if e["model"] == str(gated)} == {"attention", "hirescam", "gradcam",
                                                                                 "readers"}
    assert "attention" not in {e["method"] for e in data["summary"] if e["model"] == str(plain)}
    assert data["conditions"]["models_without_gates"] == [str(plain)] and data["conditions"]["n_cases"] == 1
    assert {(v["model"], v["method"]) for v in data["randomization"]} >= {(str(gated), "attention")}
    table = (out / "self-explaining.md").read_text()
    assert table.strip() in printed
    assert f"| {plain} | attention | no attention gates: no own map |" in table and "organ IoA" in table
    page = (out / "self-explaining.html").read_text()
    assert "Randomization" in page and page.count("<img src='images/") == 2
    assert len(list((out / "images").glob("*.png"))) == 2
    assert not list(out.glob(".*part*"))  # no temporary left behind


def test_an_unwritable_out_is_refused_before_any_model_is_loaded(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    assert main(["self-explaining", "--models", "demo", "--cases", "1", "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err
    assert "a-file" in err and "loading" not in err and "case 1/" not in err


def test_the_trust_card_reads_a_gate_declared_only_on_the_card():
    from saliency_inspector.workflows.trust import run_trust

    clf = _classifier(ConvGate())  # not a MONAI AttentionBlock: found only by its declared path
    result = run_trust(_liver_case(11).ct, [clf], methods=["attention"], class_name="liver", n_baseline=2,
                       cohort=[_liver_case(12).ct, _liver_case(13).ct], emprt_seeds=1)
    randomization = result.card.rows["attention"]["randomization"]
    # the randomized copies' gate maps were read (found by the declared path) and moved with the weights
    assert randomization.details["first_block_below_baseline"] == "gate.conv"
    assert randomization.n == 3 and randomization.estimate < 0
