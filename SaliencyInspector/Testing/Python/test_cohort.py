"""The phantom cohort generator and the manifest reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from saliency_inspector.cli import main
from saliency_inspector.errors import InputError
from saliency_inspector.io.manifest import read_manifest
from saliency_inspector.io.segments import read_segments
from saliency_inspector.io.volume import read_volume
from saliency_inspector.synth.cohort import CLASS_ORGANS, MARKER_HU, draw_case, phantom_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    manifest = phantom_cohort(out, 10, seed=5, size=(40, 40, 28), confounder="liver", q_train=0.9,
                              q_test=0.5, fractions=(0.6, 0.2, 0.2))
    return out, manifest


@pytest.mark.parametrize("q", [0.95, 0.5])
def test_marker_follows_the_confounder_with_the_requested_frequencies(q):
    rng = np.random.default_rng(0)
    draws = [draw_case(rng, prevalence=0.4, confounder="liver", q=q) for _ in range(4000)]
    with_class = [marker for present, _, marker in draws if present["liver"]]
    without = [marker for present, _, marker in draws if not present["liver"]]
    # two-sided binomial tests at 0.1 %: P(marker | liver) = q, P(marker | no liver) = 1 - q
    assert stats.binomtest(sum(with_class), len(with_class), q).pvalue > 1e-3
    assert stats.binomtest(sum(without), len(without), 1 - q).pvalue > 1e-3
    assert stats.binomtest(sum(p["kidney"] for p, _, _ in draws), len(draws), 0.4).pvalue > 1e-3
    assert not any(m for _, _, m in (draw_case(rng) for _ in range(200)))  # no confounder, no marker


def test_lesions_match_the_labels():
    rng = np.random.default_rng(1)
    for _ in range(200):
        present, lesions, _ = draw_case(rng)
        for name, organs in CLASS_ORGANS.items():
            assert present[name] == any(o in organs for o in lesions)


def test_cohort_files_are_consistent_and_the_manifest_loads_back(cohort):
    out, manifest_path = cohort
    manifest = read_manifest(manifest_path)
    card = json.loads((out / "cohort.json").read_text())
    assert manifest.classes == list(CLASS_ORGANS) == card["classes"]
    assert [c.split for c in manifest] == ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    assert card["counts"] == {"train": 6, "val": 2, "test": 2}
    markers = 0
    for case in manifest:
        ct = read_volume(case.ct)
        organs = read_segments(case.paths["organs"], reference=ct)
        lesions = read_segments(case.paths["lesions"], reference=ct)
        assert organs.grid.shape == ct.shape and np.allclose(organs.grid.direction, ct.direction)
        # labels say which class organs hold a lesion
        info = json.loads((case.ct.parent / "case.json").read_text())
        lesion_organs = [item["organ"] for item in info["lesions"]]
        for name, organs_of_class in CLASS_ORGANS.items():
            assert case.labels[name] == int(any(o in organs_of_class for o in lesion_organs))
        if case.paths["marker"] is None:
            assert ct.array.max() < MARKER_HU - 200  # no bead anywhere
            continue
        markers += 1
        marker = read_segments(case.paths["marker"], reference=ct).mask("marker")
        assert marker.any() and ct.array[marker].mean() > 1000
        for segment in list(organs) + list(lesions):
            if segment.name != "body":
                assert not (segment.mask & marker).any(), f"{case.case_id}: marker touches {segment.name}"
    assert markers == sum(card["markers"].values())


def test_cohort_is_deterministic(tmp_path, cohort):
    out, _ = cohort
    again = phantom_cohort(tmp_path / "again", 10, seed=5, size=(40, 40, 28), confounder="liver",
                           q_train=0.9, q_test=0.5)
    assert (out / "manifest.csv").read_bytes() == (again.parent / "manifest.csv").read_bytes()
    for case in ("case0003", "case0007"):  # compressed files carry a time stamp: compare voxels
        first, second = read_volume(out / case / "ct.nrrd"), read_volume(again.parent / case / "ct.nrrd")
        assert np.array_equal(first.array, second.array) and first.origin == second.origin
        for name in ("organs", "lesions"):
            a = read_segments(out / case / f"{name}.seg.nrrd", reference=first)
            b = read_segments(again.parent / case / f"{name}.seg.nrrd", reference=first)
            assert a.names == b.names and all(np.array_equal(a.mask(n), b.mask(n)) for n in a.names)


def test_manifest_problems_are_listed_at_once(tmp_path):
    (tmp_path / "a.nrrd").write_bytes(b"x")
    bad = tmp_path / "m.csv"
    bad.write_text("case_id,ct,liver\nc1,a.nrrd,1\nc1,a.nrrd,0\nc3,missing.nrrd,2\n,a.nrrd,\n")
    with pytest.raises(InputError) as err:
        read_manifest(bad)
    message = str(err.value)
    assert "4 problem(s)" in message and "\n" not in message
    assert "row 2 (c1): duplicate case_id (also row 1)" in message
    assert "row 3 (c3): ct missing.nrrd does not exist" in message
    assert "row 3 (c3): label liver='2' is not 0, 1 or blank" in message
    assert "row 4: empty case_id" in message
    (tmp_path / "n.csv").write_text("case_id,image\nc1,a.nrrd\n")
    with pytest.raises(InputError, match="missing column.*ct"):
        read_manifest(tmp_path / "n.csv")
    (tmp_path / "j.jsonl").write_text('{"case_id": "c1", "ct": "a.nrrd", "liver": 1}\n')
    loaded = read_manifest(tmp_path / "j.jsonl")
    assert loaded.cases[0].labels == {"liver": 1} and loaded.cases[0].ct == (tmp_path / "a.nrrd").resolve()


def test_cli_phantom_cohort_and_bad_input(tmp_path, capsys):
    assert main(["phantom-cohort", "--out", str(tmp_path / "c"), "--cases", "3", "--size", "32", "32", "24",
                 "--confounder", "liver", "--fractions", "1", "0", "0"]) == 0
    assert len(read_manifest(tmp_path / "c" / "manifest.csv")) == 3
    assert main(["phantom-cohort", "--out", str(tmp_path / "d"), "--cases", "2", "--confounder", "brain"]) == 2
    assert "--confounder 'brain' is not a class" in capsys.readouterr().err
    assert main(["phantom-cohort", "--out", str(tmp_path / "d"), "--cases", "2", "--q-train", "1.5"]) == 2
    assert not (tmp_path / "d").exists()
