"""The CLI with a new user's mistakes: one `error:` line, exit code 2, and the user's files unchanged.

One test per problem found by hand (issue 11, items 1-6): unwritable outputs in every sub-command,
outputs that would overwrite an input (directly, through a symlink or a hard link), `--out`
semantics, garbage model files, unreadable volumes, empty segmentations, and masks of another
patient. Every test checks the message, the exit code and the SHA-256 of every input file.
Output is captured at the file-descriptor level (capfd), so messages that ITK or torch print
behind Python's back count too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from saliency_inspector.cli import main
from saliency_inspector.cli_guard import guard_outputs
from saliency_inspector.errors import InputError
from saliency_inspector.io.segments import Segment, Segments, write_segments
from saliency_inspector.io.volume import read_volume, write_volume
from saliency_inspector.synth.phantom import make_phantom, write_phantom_case

ERROR = "saliency-inspector: error:"


def sha(paths) -> dict:
    """SHA-256 of every file (folders: of every file in them)."""
    out = {}
    for p in map(Path, paths):
        for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())):
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def run(capfd, *argv):
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, err


def assert_one_error(code, err, *must_contain):
    """Exit code 2 and stderr holding exactly one error line (progress lines aside), nothing else."""
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(ERROR)]
    others = [line for line in lines if not line.startswith((ERROR, "[saliency-inspector]"))]
    assert len(errors) == 1 and not others, err
    for text in must_contain:
        assert str(text) in errors[0], (text, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A small phantom on disk and the demo model's maps for it (written by `explain`)."""
    root = tmp_path_factory.mktemp("hardening")
    write_phantom_case(make_phantom(seed=3, size=(48, 48, 24), lesions=["liver"]), root / "case")
    assert main(["explain", str(root / "case" / "ct.nrrd"), "--model", "demo", "--method", "hirescam",
                 "--class", "liver", "--out", str(root / "maps")]) == 0
    return root


def inputs(case):
    return [case / "case" / "ct.nrrd", case / "case" / "organs.seg.nrrd", case / "maps" / "hirescam_liver.nrrd"]


# ---- item 1: unwritable outputs, in every sub-command, found before the heavy work ---------------
def blocked(case, tail):
    """A path that cannot be written: a part of it is a file."""
    blocker = case / "a-file"
    blocker.write_text("not a folder\n")
    return blocker / tail


@pytest.mark.parametrize("command", ["explain", "explain-out-sub", "render", "evaluate-json", "evaluate-csv",
                                     "phantom", "demo", "train-demo"])
def test_unwritable_output_is_one_error_line_before_any_work(case, capfd, command):
    ct, seg, hmap = inputs(case)
    argv = {
        "explain": ["explain", ct, "--model", "demo", "--out", blocked(case, "")],
        "explain-out-sub": ["explain", ct, "--model", "demo", "--out", blocked(case, "sub/deeper")],
        "render": ["render", ct, hmap, "--out", blocked(case, "x.png")],
        "evaluate-json": ["evaluate", hmap, "--masks", seg, "--json", blocked(case, "m.json")],
        "evaluate-csv": ["evaluate", hmap, "--masks", seg, "--csv", blocked(case, "m.csv")],
        "phantom": ["phantom", "--out", blocked(case, "case"), "--size", 24, 24, 12],
        "demo": ["demo", "--out", blocked(case, "demo")],
        "train-demo": ["train-demo", "--out", blocked(case, "model")],
    }[command]
    before = sha(inputs(case))
    code, _, err = run(capfd, *argv)
    assert_one_error(code, err, "a-file")
    assert "loading model" not in err and "making" not in err and "generating" not in err  # nothing heavy ran
    assert sha(inputs(case)) == before


def test_a_read_only_folder_is_refused_with_permission_denied(tmp_path):
    """A real permission problem (as an unprivileged user: root may write anywhere)."""
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: no way to be refused a write")
    top = Path(tempfile.mkdtemp(prefix="si-ro-"))
    try:
        top.chmod(0o755)
        case = make_phantom(seed=1, size=(24, 24, 12))
        ct = write_volume(case.ct, top / "ct.nrrd")
        hmap = write_volume(case.ct.with_array(case.ct.array.astype(np.float32)), top / "map.nrrd")
        for f in (ct, hmap):
            f.chmod(0o644)
        ro = top / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        before = sha([ct, hmap])
        as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
        for argv in (["render", ct, hmap, "--out", ro / "x.png"], ["render", ct, hmap, "--out", ro / "sub" / "x.png"],
                     ["evaluate", hmap, "--masks", ct, "--json", ro / "m.json"]):
            done = subprocess.run([*as_user, sys.executable, "-m", "saliency_inspector.cli", *map(str, argv)],
                                  capture_output=True, text=True, timeout=120)
            line = assert_one_error(done.returncode, done.stderr, str(ro))
            assert "Permission denied" in line and "Traceback" not in done.stderr
        assert sha([ct, hmap]) == before and not any(ro.iterdir())
    finally:
        (top / "ro").chmod(0o755)
        shutil.rmtree(top)


# ---- item 2: no sub-command writes over its own inputs (resolved paths, symlinks, hard links) -----
def spell(kind, target: Path, where: Path) -> Path:
    """An output path that is ``target``: the same path, a relative spelling, a symlink or a hard link at ``where``."""
    if kind == "same":
        return target.parent / "." / target.name
    if kind == "relative":
        return Path(os.path.relpath(target))
    where.parent.mkdir(parents=True, exist_ok=True)
    if where.exists() or where.is_symlink():
        where.unlink()
    where.symlink_to(target) if kind == "symlink" else os.link(target, where)
    return where


KINDS = ("same", "relative", "symlink", "hardlink")
COMMANDS = ("evaluate --json map", "evaluate --csv masks", "evaluate --json ct", "render --out map",
            "render --out ct", "explain --out CT's folder")


# render writes .png, so only a link can make its output one of its input volumes
@pytest.mark.parametrize("command, kind", [(c, k) for c in COMMANDS for k in KINDS
                                           if not (c.startswith("render") and k in ("same", "relative"))])
def test_no_sub_command_writes_over_its_inputs(case, capfd, tmp_path, command, kind, monkeypatch):
    ct, seg, hmap = inputs(case)
    monkeypatch.chdir(tmp_path)
    if command.startswith("explain"):
        # a CT stored under the name explain would give its map, in the folder it writes to
        ct = shutil.copy(ct, tmp_path / "X" / "hirescam_liver.nrrd") if (tmp_path / "X").mkdir() is None else None
        out_dir = ct.parent if kind in ("same", "relative") else tmp_path / "Y"
        if kind == "relative":
            out_dir = Path(os.path.relpath(out_dir))
        if kind in ("symlink", "hardlink"):
            spell(kind, ct, out_dir / "hirescam_liver.nrrd")
        argv = ["explain", ct, "--model", "demo", "--method", "hirescam", "--class", "liver", "--out", out_dir]
    elif command.startswith("render"):
        victim = hmap if command.endswith("map") else ct
        argv = ["render", ct, hmap, "--out", spell(kind, victim, tmp_path / "out" / "picture.png")]
    else:
        victim = {"map": hmap, "masks": seg, "ct": ct}[command.split()[-1]]
        option = command.split()[1]
        argv = ["evaluate", hmap, "--masks", seg, "--ct", ct, option,
                spell(kind, victim, tmp_path / "out" / victim.name)]
    watched = [ct, seg, hmap]
    before = sha(watched)
    code, _, err = run(capfd, *argv)
    assert_one_error(code, err, "one of this command's inputs")
    assert "forward pass" not in err
    assert sha(watched) == before


@pytest.mark.parametrize("command", ["compare --json ct", "compare --csv masks", "trust --out ct", "batch --out manifest",
                                     "train --out manifest", "train-shortcut --out shipped"])
def test_later_sub_commands_refuse_outputs_that_are_inputs(case, capfd, tmp_path, command):
    """compare, trust, batch, train and train-shortcut use the same guard before any work."""
    from saliency_inspector.models.demo_model import MODELS_DIR

    ct, seg, hmap = inputs(case)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"case_id,ct,organs,liver\nc1,{ct},{seg},1\n")
    name, option, victim = command.split()
    target = {"ct": ct, "masks": seg, "manifest": manifest, "shipped": MODELS_DIR}[victim]
    argv = {"compare": ["compare", ct, "--model", "demo", "--masks", seg, "--class", "liver", "--segment", "liver"],
            "trust": ["trust", ct, "--model", "demo", "--class", "liver"],
            "batch": ["batch", manifest, "--model", "demo"],
            "train": ["train", manifest, "--arch", "demo"],
            "train-shortcut": ["train-shortcut", "--manifest", manifest]}[name] + [option, target]
    watched = [ct, seg, manifest, *sorted(MODELS_DIR.iterdir())]
    before = sha(watched)
    code, _, err = run(capfd, *argv)
    assert_one_error(code, err, str(target))
    assert sha(watched) == before and "loading model" not in err


def test_guard_outputs_is_reusable_and_documented(tmp_path):
    src = tmp_path / "in.nrrd"
    src.write_bytes(b"x")
    assert "symlinks" in guard_outputs.__doc__ and "InputError" in guard_outputs.__doc__
    guard_outputs([src], files=[tmp_path / "new" / "out.json"], folders=[tmp_path / "o"])
    assert not (tmp_path / "new").exists() and not (tmp_path / "o").exists()  # checked, nothing left behind
    with pytest.raises(InputError, match="inputs"):
        guard_outputs([src], files=[tmp_path / "new" / ".." / "in.nrrd"])
    (tmp_path / "o").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        guard_outputs([src], files=[tmp_path / "o"])
    with pytest.raises(InputError, match="not a folder"):
        guard_outputs([src], folders=[src])


def test_train_demo_never_writes_the_shipped_model(capfd):
    from saliency_inspector.cli import build_parser
    from saliency_inspector.models.demo_model import MODELS_DIR

    shipped = sorted(MODELS_DIR.iterdir())
    before = sha(shipped)
    default = build_parser().parse_args(["train-demo"]).out
    assert Path(default).resolve() != MODELS_DIR.resolve()
    code, _, err = run(capfd, "train-demo", "--out", MODELS_DIR)
    assert_one_error(code, err, "shipped demo model")
    assert "generating" not in err and sha(shipped) == before


# ---- item 3: --out semantics of phantom and render ------------------------------------------------
def test_phantom_out_existing_file(case, capfd, tmp_path):
    target = tmp_path / "taken"
    target.write_text("mine\n")
    before = sha([target])
    code, _, err = run(capfd, "phantom", "--out", target, "--size", 24, 24, 12)
    assert_one_error(code, err, str(target), "not a folder")
    assert sha([target]) == before


def test_render_out_is_a_png_or_a_folder(case, capfd, tmp_path):
    ct, seg, hmap = inputs(case)
    before = sha(inputs(case))
    for bad in (tmp_path / "x.nrrd", tmp_path / "name"):
        code, _, err = run(capfd, "render", ct, hmap, "--out", bad)
        assert_one_error(code, err, ".png")
        assert not bad.exists() and not bad.with_suffix(".png").exists()
    folder = tmp_path / "pictures"
    folder.mkdir()
    for out, expected in ((folder, folder / "hirescam_liver.png"),
                          (f"{tmp_path / 'new'}/", tmp_path / "new" / "hirescam_liver.png")):
        code, stdout, _ = run(capfd, "render", ct, hmap, "--masks", seg, "--out", out)
        assert code == 0 and stdout.strip() == str(expected) and expected.is_file()
    assert sha(inputs(case)) == before
    # the picture's title says method, class and p (from explain's predictions.json beside the map)
    import json

    from saliency_inspector.cli_render import _render_title

    record = json.loads((case / "maps" / "predictions.json").read_text())
    p = record["probabilities"][record["class_names"].index("liver")]
    assert _render_title(hmap) == f"HiResCAM · class liver · p = {p:.2f}"


# ---- item 4: model files -------------------------------------------------------------------------
class Payload:  # pickled by reference to code: what weights_only must refuse
    pass


def test_garbage_model_files(case, capfd, tmp_path):
    import pickle

    import torch

    ct = inputs(case)[0]
    pt2, pt = tmp_path / "bad.pt2", tmp_path / "bad.pt"
    pt2.write_text("hello garbage\n")
    pt.write_text("hello garbage\n")
    before = sha([pt2, pt, ct])
    code, _, err = run(capfd, "explain", ct, "--model", pt2, "--out", tmp_path / "o")
    assert_one_error(code, err, "bad.pt2", "not a torch.export program")
    assert "Traceback" not in err and "torch/export" not in err
    for extra in ([], ["--arch", "DenseNet121"]):  # the file is diagnosed, with or without --arch
        code, _, err = run(capfd, "explain", ct, "--model", pt, *extra, "--out", tmp_path / "o")
        line = assert_one_error(code, err, "bad.pt", "is not a PyTorch weights file")
        assert "pickled" not in line and "--arch" not in line

    evil = tmp_path / "evil.pt"
    torch.save({"w": Payload()}, evil)
    with pytest.raises(pickle.UnpicklingError) as raised:
        torch.load(evil, weights_only=True)
    code, _, err = run(capfd, "explain", ct, "--model", evil, "--arch", "DenseNet121", "--out", tmp_path / "o")
    line = assert_one_error(code, err, "refused", "pickled")
    quoted = line.split("(", 1)[1].split("). Unpickling")[0]
    assert "\x1b" not in quoted and "Unsupported global" in quoted
    if quoted.endswith("…"):
        shown = quoted[:-1]
        message = next(m for m in str(raised.value).splitlines() if shown.split(": ", 1)[-1][:30] in m)
        rest = message[message.index(shown[-20:]) + 20:]
        assert rest[:1] in (" ", ",", ".", ";", ":"), (shown, rest[:10])  # cut between words
    assert sha([pt2, pt, ct]) == before
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# ---- item 5: volumes and segmentations -----------------------------------------------------------
def test_unreadable_volumes_and_empty_folders(case, capfd, tmp_path):
    text = tmp_path / "text.nrrd"
    text.write_text("just text\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    before = sha([text])
    code, _, err = run(capfd, "explain", text, "--model", "demo", "--out", tmp_path / "o")
    line = assert_one_error(code, err, "text.nrrd", "not a valid image file")
    assert ".cxx" not in line and "sitk" not in line and "expected one of" not in line
    code, _, err = run(capfd, "explain", empty, "--model", "demo", "--out", tmp_path / "o")
    assert_one_error(code, err, "empty", "folder is empty")
    assert "WARNING" not in err and "GDCM" not in err
    assert sha([text]) == before


def test_one_nan_voxel_is_singular(case, capfd, tmp_path):
    ct = read_volume(inputs(case)[0])
    array = ct.array.astype(np.float32)
    array[3, 4, 5] = np.nan
    path = write_volume(ct.with_array(array), tmp_path / "nan.nrrd")
    before = sha([path])
    code, _, err = run(capfd, "explain", path, "--model", "demo", "--out", tmp_path / "o")
    assert_one_error(code, err, "1 voxel is NaN")
    assert sha([path]) == before


def test_empty_segmentations_are_refused_with_advice_that_works(case, capfd, tmp_path):
    ct, _, hmap = inputs(case)
    grid = read_volume(ct)
    none = write_segments(Segments([], grid), tmp_path / "none.seg.nrrd")
    blank = write_segments(Segments([Segment("liver", np.zeros(grid.shape, bool))], grid), tmp_path / "blank.seg.nrrd")
    before = sha([none, blank, ct, hmap])
    for region in ("auto", "all"):
        code, _, err = run(capfd, "evaluate", hmap, "--masks", none, "--ct", ct, "--region", region)
        assert_one_error(code, err, "none.seg.nrrd", "no segments")
        code, _, err = run(capfd, "evaluate", hmap, "--masks", blank, "--ct", ct, "--region", region)
        line = assert_one_error(code, err, "every segment (liver) is empty")
        assert "--region" not in line  # no advice that leads to a table of n/a
    assert sha([none, blank, ct, hmap]) == before


# ---- item 6: masks of another patient --------------------------------------------------------------
@pytest.fixture(scope="module")
def two_patients(tmp_path_factory):
    root = tmp_path_factory.mktemp("patients")
    write_phantom_case(make_phantom(seed=0, size=(128, 128, 40)), root / "a")
    write_phantom_case(make_phantom(seed=7, size=(160, 160, 48), oblique=True), root / "b")
    ct = read_volume(root / "a" / "ct.nrrd")
    lesion_free = np.exp(-np.linspace(-2, 2, ct.shape[2]) ** 2)[None, None, :] * np.ones(ct.shape)
    write_volume(ct.with_array(lesion_free.astype(np.float32)), root / "map.nrrd")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("command", ["evaluate", "render"])
def test_masks_of_another_patient_are_refused_or_warned(two_patients, capfd, command, tmp_path):
    a, b, hmap = two_patients / "a", two_patients / "b", two_patients / "map.nrrd"
    watched = [a / "ct.nrrd", b / "organs.seg.nrrd", hmap]
    before = sha(watched)
    argv = (["evaluate", hmap, "--masks", b / "organs.seg.nrrd", "--ct", a / "ct.nrrd"] if command == "evaluate"
            else ["render", a / "ct.nrrd", hmap, "--masks", b / "organs.seg.nrrd", "--out", tmp_path / "x.png"])
    code, _, err = run(capfd, *argv)
    assert_one_error(code, err, "organs.seg.nrrd", "do not seem to describe this CT", "--allow-mismatch")
    code, out, err = run(capfd, *argv, "--allow-mismatch")
    assert code == 0 and "WARNING" in err and "another patient" in err
    # the same patient's masks, on their own (other) grid, pass without a word
    code, out, err = run(capfd, *[str(x).replace(str(b / "organs"), str(a / "organs")) for x in argv])
    assert code == 0 and "WARNING" not in err
    assert sha(watched) == before


def test_same_body_measurements_separate_patients():
    import importlib

    consistency = importlib.import_module("saliency_inspector.scoring.consistency")
    a = make_phantom(seed=0, size=(128, 128, 40))
    same_oblique = make_phantom(seed=0, size=(100, 100, 30), oblique=True)
    other = make_phantom(seed=7, size=(128, 128, 40))
    assert consistency.same_body(same_oblique.organs, a.ct, a.ct)["outline_dice"] > 0.95
    found = consistency.same_body(other.organs, a.ct, a.ct)
    assert found["outline_dice"] < consistency.MIN_OUTLINE_DICE and found["problems"]
    # far away: no overlap of the fields of view at all
    moved = Segments(list(other.organs), other.ct.__class__(other.organs.grid.array, other.organs.grid.spacing,
                                                            (5000.0, 0.0, 0.0), other.organs.grid.direction))
    assert consistency.same_body(moved, a.ct, a.ct)["fov_share"] == 0.0
