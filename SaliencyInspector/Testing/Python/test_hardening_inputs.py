"""The second hardening pass (issue 23): inputs that were accepted without a word are refused in one
line (exit 2) with the inputs unchanged and nothing written; behaviour no test pinned before."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil

import numpy as np
import pytest

import saliency_inspector as si
from saliency_inspector.cli import main
from saliency_inspector.errors import InputError
from saliency_inspector.io.segments import Segment, Segments, read_segments, write_segments
from saliency_inspector.io.volume import Volume, read_volume, write_volume


def digest(*paths) -> dict:
    """Every file's bytes hashed: the inputs must come out unchanged."""
    out = {}
    for path in paths:
        path = os.fspath(path)
        files = [os.path.join(r, f) for r, _d, fs in os.walk(path) for f in fs] if os.path.isdir(path) else [path]
        for f in files:
            with open(f, "rb") as fh:
                out[f] = hashlib.sha256(fh.read()).hexdigest()
    return out


def refused(capsys, argv, *, says, inputs=(), absent=()) -> str:
    """Run the CLI: exit 2, one error line containing each of ``says``, inputs unchanged, ``absent`` not made."""
    before = digest(*inputs)
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    line = [t for t in err.splitlines() if t.startswith("saliency-inspector: error:")]
    assert code == 2, err
    assert len(line) == 1 and "Traceback" not in err, err
    for text in ([says] if isinstance(says, str) else says):
        assert text in line[0], line[0]
    assert digest(*inputs) == before
    for path in absent:
        assert not os.path.exists(path), path
    return line[0]


def mirrored(segments: Segments) -> Segments:
    """The same segments flipped left/right in the array (the header unchanged)."""
    return Segments([Segment(s.name, s.mask[:, :, ::-1].copy(), s.color) for s in segments], segments.grid)


# ---- item 2: one output ---------------------------------------------------------------------------
def test_a_single_output_model_without_a_card_reads_its_logit_with_a_sigmoid():
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(2, 1))
    clf = si.load_classifier(net, device="cpu")  # no card: multilabel False by default
    x = torch.randn(3, 1, 8, 8, 8)
    logits = clf.predict(x)
    p = clf.probabilities(logits)
    assert torch.allclose(p, torch.sigmoid(logits))
    assert not torch.allclose(p, torch.ones_like(p))  # softmax over one logit was 1.0 whatever the input
    ct = Volume(np.random.default_rng(0).normal(0, 300, (12, 12, 12)).astype(np.float32), (2.0, 2.0, 2.0))
    res = si.explain(clf, ct, methods=["hirescam"], classes="all")
    assert res.multilabel and res.predictions()["activation"] == "sigmoid"
    assert res.probabilities[0] == pytest.approx(float(torch.sigmoid(torch.as_tensor(res.logits[0]))))


# ---- item 3: the same body, left and right --------------------------------------------------------
def test_left_right_pairs_on_the_wrong_side_are_named(small_phantom):
    from saliency_inspector.scoring.consistency import same_body, side_problems

    ct, organs = small_phantom.ct, small_phantom.organs
    assert same_body(organs, ct, ct)["problems"] == []
    problems = same_body(mirrored(organs), ct, ct)["problems"]
    assert any("'lung_left'" in p and "patient's right of 'lung_right'" in p for p in problems), problems
    assert any("'kidney_left'" in p for p in problems)
    # a sided segment alone (no partner): against the body's midline
    lesions = mirrored(small_phantom.lesions)
    problems = same_body(lesions, ct, ct)["problems"]
    assert any("'lesion_lung_left'" in p and "midline" in p for p in problems), problems
    oblique = si.make_phantom(seed=3, size=(48, 48, 32), oblique=True)  # another direction: sides still right
    assert side_problems(oblique.organs, 0.0) == []
    assert len(side_problems(mirrored(oblique.organs), 0.0)) == 2  # the lung and the kidney pairs


@pytest.fixture(scope="module")
def case_files(tmp_path_factory, small_phantom):
    """The small phantom on disk, with mirrored organs and another patient's organs beside it."""
    from saliency_inspector.synth.phantom import write_phantom_case

    folder = tmp_path_factory.mktemp("case23")
    files = write_phantom_case(small_phantom, folder)
    write_segments(mirrored(small_phantom.organs), folder / "mirrored.seg.nrrd")
    other = si.make_phantom(seed=11, size=(48, 48, 32), lesions=["liver"]).organs  # another scan's field of view
    grid = other.grid
    write_segments(Segments(list(other), Volume(grid.array, grid.spacing, np.asarray(grid.origin) + [0, 0, 150.0],
                                                grid.direction)), folder / "other.seg.nrrd")
    return folder


@pytest.mark.parametrize("masks, says", [("mirrored.seg.nrrd", "masks mirrored?"),
                                         ("other.seg.nrrd", "do not seem to describe this CT's body")])
def test_compare_refuses_mirrored_or_another_patients_masks(case_files, tmp_path, capsys, masks, says):
    out = tmp_path / "cmp"
    refused(capsys, ["compare", case_files / "ct.nrrd", "--model", "demo", "--masks", case_files / masks,
                     "--segment", "liver", "--class", "liver", "--method", "hirescam", "--out", out,
                     "--json", tmp_path / "c.json"],
            says=[says, "--allow-mismatch"], inputs=[case_files], absent=[out, tmp_path / "c.json"])


def test_trust_refuses_mirrored_masks_and_a_class_without_its_segment(case_files, tmp_path, capsys):
    out = tmp_path / "trust"
    base = ["trust", case_files / "ct.nrrd", "--model", "demo", "--skip-randomization", "--out", out]
    refused(capsys, base + ["--class", "liver", "--masks", case_files / "mirrored.seg.nrrd", "--segment", "liver"],
            says="masks mirrored?", inputs=[case_files], absent=[out])
    # item 4: no segment named after the class: was scored against every segment (Localization FAIL 0.000)
    refused(capsys, base + ["--class", "kidney", "--masks", case_files / "lesions.seg.nrrd"],
            says=["no segment of the masks is named after class 'kidney'", "lesion_liver, lesion_lung_left",
                  "--segment"], inputs=[case_files], absent=[out])
    refused(capsys, base + ["--class", "liver", "--masks", case_files / "lesions.seg.nrrd", "--segment", "nope"],
            says="--segment 'nope' is not in the masks", inputs=[case_files], absent=[out])


def test_trust_on_a_ct_without_a_body_does_not_suggest_region(case_files, tmp_path, capsys):
    ct = read_volume(case_files / "ct.nrrd")
    cold = ct.with_array(np.linspace(-1000, -900, ct.array.size, dtype=np.float32).reshape(ct.shape))
    write_volume(cold, tmp_path / "cold.nrrd")
    line = refused(capsys, ["trust", tmp_path / "cold.nrrd", "--model", "demo", "--class", "liver",
                            "--skip-randomization", "--out", tmp_path / "t"],
                   says="trust needs a CT in Hounsfield units", absent=[tmp_path / "t"])
    assert "--region" not in line


# ---- batch: the model is checked before the first case ------------------------------------------
def test_batch_with_an_unusable_model_stops_before_the_first_case(tmp_path, capsys):
    cohort = si.phantom_cohort(tmp_path / "cohort", 2, seed=1, size=(32, 32, 20))
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a model at all")
    out = tmp_path / "run"
    refused(capsys, ["batch", cohort, "--model", bad, "--arch", "DenseNet121", "--out", out],
            says=str(bad), inputs=[tmp_path / "cohort", bad], absent=[out])


# ---- accepted without a word ---------------------------------------------------------------------
CT_CASES = {
    "one voxel": (np.full((1, 1, 1), 40, np.int16), (1.0, 1.0, 1.0), "a single voxel"),
    "one slice": (np.random.default_rng(0).integers(-1000, 1000, (1, 16, 16)).astype(np.int16), (1.0, 1.0, 1.0),
                  "a single slice"),
    "100 mm": (np.random.default_rng(1).integers(-1000, 1000, (8, 8, 8)).astype(np.int16), (100.0, 100.0, 100.0),
               "is not a CT's"),
    "1e-6 mm": (np.random.default_rng(2).integers(-1000, 1000, (8, 8, 8)).astype(np.int16), (1e-6, 1e-6, 1e-6),
                "is not a CT's"),
    "int8": (np.random.default_rng(3).integers(-128, 127, (8, 8, 8)).astype(np.int8), (1.0, 1.0, 1.0),
             "cannot hold Hounsfield units"),
    "constant": (np.full((8, 8, 8), 40, np.int16), (1.0, 1.0, 1.0), "every voxel is 40"),
}


@pytest.mark.parametrize("kind", list(CT_CASES))
def test_a_ct_that_cannot_be_a_ct_is_refused_before_explaining(tmp_path, capsys, kind):
    array, spacing, says = CT_CASES[kind]
    path = tmp_path / "ct.nrrd"
    write_volume(Volume(array, spacing), path)
    refused(capsys, ["explain", path, "--model", "demo", "--out", tmp_path / "maps"], says=says,
            inputs=[path], absent=[tmp_path / "maps"])


def test_a_target_layer_with_a_1x1x1_output_is_refused():
    from torch import nn

    net = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(2, 2))
    clf = si.load_classifier(net, card={"classes": ["a", "b"]}, device="cpu")
    ct = Volume(np.random.default_rng(0).normal(0, 300, (12, 12, 12)).astype(np.float32), (2.0, 2.0, 2.0))
    with pytest.raises(InputError, match="1×1×1 output"):
        si.explain(clf, ct, methods=["hirescam"], layer="1")
    assert si.explain(clf, ct, methods=["hirescam"], layer="0").raw  # a spatial layer still works


@pytest.mark.parametrize("at, says", [("nan,0,0", "three finite numbers"), ("inf,0,0", "three finite numbers"),
                                      ("5000,0,0", "lies outside the CT")])
def test_render_at_nan_or_outside_the_ct_is_refused(case_files, tmp_path, capsys, at, says):
    ct = read_volume(case_files / "ct.nrrd")
    write_volume(ct.with_array(ct.array.astype(np.float32)), tmp_path / "hirescam_liver.nrrd")
    refused(capsys, ["render", case_files / "ct.nrrd", tmp_path / "hirescam_liver.nrrd", "--at", at,
                     "--out", tmp_path / "r.png"], says=says, inputs=[case_files], absent=[tmp_path / "r.png"])


def test_render_refuses_a_nan_map_and_a_map_of_another_ct(case_files, tmp_path, capsys):
    ct = read_volume(case_files / "ct.nrrd")
    holes = ct.array.astype(np.float32)
    holes[5, 5, 5] = np.nan
    write_volume(ct.with_array(holes), tmp_path / "nan.nrrd")
    refused(capsys, ["render", case_files / "ct.nrrd", tmp_path / "nan.nrrd", "--out", tmp_path / "a.png"],
            says="1 NaN or infinite voxels", inputs=[case_files, tmp_path / "nan.nrrd"], absent=[tmp_path / "a.png"])
    shifted = Volume(ct.array.astype(np.float32), ct.spacing, np.asarray(ct.origin) + 60.0, ct.direction)
    write_volume(shifted, tmp_path / "shifted.nrrd")
    refused(capsys, ["render", case_files / "ct.nrrd", tmp_path / "shifted.nrrd", "--out", tmp_path / "b.png"],
            says="covers only", inputs=[case_files], absent=[tmp_path / "b.png"])


def test_manifest_ids_with_a_newline_are_refused(tmp_path, case_files):
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "ct"])
        w.writerow(["a\nb", str(case_files / "ct.nrrd")])
    with pytest.raises(InputError, match="newline, tab or other control character") as err:
        si.read_manifest(manifest)
    assert "\n" not in str(err.value)


def test_names_for_a_seg_nrrd_is_refused(case_files, tmp_path, capsys):
    names = tmp_path / "names.json"
    names.write_text('{"1": "liver"}')
    ct = read_volume(case_files / "ct.nrrd")
    write_volume(ct.with_array(ct.array.astype(np.float32)), tmp_path / "m.nrrd")
    refused(capsys, ["evaluate", tmp_path / "m.nrrd", "--masks", case_files / "organs.seg.nrrd", "--names", names,
                     "--json", tmp_path / "o.json"], says="leave --names out", inputs=[case_files, names],
            absent=[tmp_path / "o.json"])


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_error_names_the_file(case_files, tmp_path, capsys):
    ct = read_volume(case_files / "ct.nrrd")
    write_volume(ct.with_array(ct.array.astype(np.float32)), tmp_path / "m.nrrd")
    refused(capsys, ["evaluate", tmp_path / "m.nrrd", "--masks", case_files / "organs.seg.nrrd", "--ct",
                     case_files / "ct.nrrd", "--json", "/dev/full"], says="/dev/full: No space left on device",
            inputs=[case_files])


def test_json_and_csv_leave_no_partial_file_when_the_write_fails(tmp_path, monkeypatch):
    from saliency_inspector.io import records

    def failing(rows):
        yield {"a": 1}
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError) as err:
        records.write_csv(tmp_path / "t.csv", failing(None), ["a"])
    assert err.value.filename == str(tmp_path / "t.csv")
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


# ---- behaviour no test pinned --------------------------------------------------------------------
def test_more_than_255_segments_pack_into_a_second_layer_and_round_trip(tmp_path):
    shape = (4, 20, 20)
    grid = Volume(np.zeros(shape, np.int16), (1.0, 1.0, 2.0))
    segments = []
    for n in range(300):  # 300 single voxels, none overlapping
        mask = np.zeros(shape, bool)
        mask.flat[n] = True
        segments.append(Segment(f"s{n}", mask, (0.5, 0.5, 0.5)))
    packed = Segments(segments, grid)
    assert len(packed.layers) == 2  # a labelmap layer holds at most 255 labels
    write_segments(packed, tmp_path / "many.seg.nrrd")
    back = read_segments(tmp_path / "many.seg.nrrd")
    assert back.names == [f"s{n}" for n in range(300)]
    assert len(back.layers) >= 2
    for n in (0, 254, 255, 299):
        assert np.array_equal(back.mask(f"s{n}"), segments[n].mask)


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_render_out_onto_the_masks_is_refused(case_files, tmp_path, capsys, link):
    masks = tmp_path / "organs.seg.nrrd"
    shutil.copy(case_files / "organs.seg.nrrd", masks)
    out = tmp_path / "out.png"
    (os.symlink if link == "symlink" else os.link)(masks, out)
    ct = read_volume(case_files / "ct.nrrd")
    write_volume(ct.with_array(ct.array.astype(np.float32)), tmp_path / "hirescam_liver.nrrd")
    refused(capsys, ["render", case_files / "ct.nrrd", tmp_path / "hirescam_liver.nrrd", "--masks", masks,
                     "--out", out], says=str(out), inputs=[masks, case_files])


@pytest.mark.slow
def test_resume_redoes_a_case_whose_masks_changed_and_a_failed_case(tmp_path):
    from saliency_inspector.cohort import case as case_module

    cohort = si.phantom_cohort(tmp_path / "cohort", 3, seed=1, size=(32, 32, 20))
    out = tmp_path / "run"
    fast = dict(model="demo", resamples=200, progress=False)
    first = si.batch(cohort, out_dir=out, **fast)
    assert sorted(first.computed) == ["case0000", "case0001", "case0002"]
    # a case's mask file rewritten (other masks): that case only is redone
    organs = tmp_path / "cohort" / "case0001" / "organs.seg.nrrd"
    seg = read_segments(organs)
    write_segments(Segments([Segment(s.name, s.mask, s.color) for s in seg if s.name != "spleen"], seg.grid), organs)
    again = si.batch(cohort, out_dir=out, **fast)
    assert again.computed == ["case0001"] and sorted(again.skipped) == ["case0000", "case0002"]
    segments = {r["segment"] for r in csv.DictReader(open(out / "per_case.csv")) if r["case_id"] == "case0001"}
    assert "spleen" not in segments
    # a case that failed is never taken as done: the next run redoes it and it gets rows
    ct = tmp_path / "cohort" / "case0002" / "ct.nrrd"
    kept = ct.read_bytes()
    ct.write_bytes(b"garbage")
    broken = si.batch(cohort, out_dir=out, **fast)
    assert list(broken.failed) == ["case0002"]
    assert "case0002" not in {r["case_id"] for r in csv.DictReader(open(out / "per_case.csv"))}
    ct.write_bytes(kept)
    healed = si.batch(cohort, out_dir=out, **fast)
    assert healed.computed == ["case0002"] and not healed.failed
    assert "case0002" in {r["case_id"] for r in csv.DictReader(open(out / "per_case.csv"))}
    assert case_module  # the per-case module is what decides "done" (finished_result)
