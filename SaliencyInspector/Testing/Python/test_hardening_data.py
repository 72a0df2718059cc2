"""Nothing lost, nothing silently wrong (issue 23, the io/ and cohort/ items): each bad input gives one
`error:` line and exit code 2 at the CLI, the inputs stay unchanged and nothing partial is left.

Labelmaps whose memory grew with the largest label value, tracebacks (an empty `.seg.nrrd`, a segment
in a missing layer, a symbolic link loop), outputs written in place (a failed write left a truncated
file), names that sanitised to one file, workers that outlived a killed `batch`, two runs into one
folder and `--json X --csv X`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from saliency_inspector.cli import main
from saliency_inspector.cohort import case as case_module
from saliency_inspector.cohort.case import case_folder
from saliency_inspector.cohort.lock import LOCK_FILE, output_lock
from saliency_inspector.errors import InputError
from saliency_inspector.io.manifest import read_manifest, write_manifest
from saliency_inspector.io.names import safe_name
from saliency_inspector.io.segments import Segment, Segments, read_segments, write_segments
from saliency_inspector.io.volume import Volume, write_volume
from saliency_inspector.synth.cohort import phantom_cohort
from saliency_inspector.synth.phantom import make_phantom, write_phantom_case

from test_cli_hardening import ERROR, sha  # noqa: E402 - one digest of the inputs for every hardening test




def one_error(capfd, argv, *must_contain) -> str:
    """Run the CLI in this process: exit code 2 and exactly one error line holding ``must_contain``."""
    code = main([str(a) for a in argv])
    _, err = capfd.readouterr()
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(ERROR)]
    assert len(errors) == 1 and all(line.startswith((ERROR, "[saliency-inspector]")) for line in lines), err
    for text in must_contain:
        assert text in errors[0], (text, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A small phantom and a float map on its grid (no model needed)."""
    root = tmp_path_factory.mktemp("hardening-data")
    phantom = make_phantom(seed=2, size=(32, 32, 16), lesions=["liver"])
    write_phantom_case(phantom, root / "case")
    write_volume(phantom.ct.with_array(np.random.default_rng(0).random(phantom.ct.shape, np.float32)),
                 root / "map.nrrd")
    return root


# ---- 1. a labelmap's memory follows its number of labels, not its largest value ------------------
def test_a_labelmap_with_a_huge_label_costs_memory_by_labels_not_by_value(tmp_path):
    array = np.zeros((16, 20, 24), np.int32)
    array[1, 2, 3] = -2_000_000_000
    array[4:6, 4:6, 4:6] = 2_000_000_000
    array[8, 8, 8] = 3
    path = write_volume(Volume(array), tmp_path / "labels.nrrd")
    tracemalloc.start()
    try:
        segments = read_segments(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6, peak  # was a 4e9-entry table (15.7 GB)
    assert segments.names == ["label_-2000000000", "label_3", "label_2000000000"]
    assert segments.mask("label_-2000000000").sum() == 1 and segments.mask("label_2000000000").sum() == 8


@pytest.mark.parametrize("dtype", [np.int64, np.float64, np.uint64])
def test_a_label_beyond_32_bits_is_one_error_line(case, capfd, tmp_path, dtype):
    array = np.zeros(make_phantom(seed=2, size=(32, 32, 16)).ct.shape, dtype)
    array[2, 3, 4] = 1
    array[5, 6, 7] = 1e12  # was a 7 TiB allocation: MemoryError traceback
    reference = read_segments(case / "case" / "organs.seg.nrrd").grid
    path = write_volume(reference.with_array(array), tmp_path / "labels.nrrd")
    before = sha([path, case / "map.nrrd"])
    one_error(capfd, ["evaluate", case / "map.nrrd", "--masks", path, "--json", tmp_path / "m.json"],
              "labels.nrrd", "label value 1000000000000,", "outside the range")
    assert sha([path, case / "map.nrrd"]) == before and not (tmp_path / "m.json").exists()


# ---- 2. tracebacks that are one line now ---------------------------------------------------------
def test_an_empty_seg_nrrd_is_one_error_line(case, capfd, tmp_path):
    empty = tmp_path / "empty.seg.nrrd"
    empty.touch()
    one_error(capfd, ["evaluate", case / "map.nrrd", "--masks", empty], "empty.seg.nrrd", "the file is empty")
    assert empty.stat().st_size == 0


def test_a_segment_in_a_missing_layer_is_one_error_line(case, capfd, tmp_path):
    import nrrd

    data, header = nrrd.read(str(case / "case" / "organs.seg.nrrd"))
    header["Segment1_Layer"] = "7"
    bad = tmp_path / "bad.seg.nrrd"
    nrrd.write(str(bad), data, header)
    before = sha([bad])
    line = one_error(capfd, ["evaluate", case / "map.nrrd", "--masks", bad], "bad.seg.nrrd", "layer 7")
    assert "re-export" in line and sha([bad]) == before


def symlink_loop(folder: Path) -> Path:
    (folder / "loop-a").symlink_to(folder / "loop-b")
    (folder / "loop-b").symlink_to(folder / "loop-a")
    return folder / "loop-a"


@pytest.mark.parametrize("where", ["json", "json-inside", "render-out", "manifest-ct", "batch-manifest"])
def test_a_symbolic_link_loop_is_one_error_line(case, capfd, tmp_path, where):
    loop = symlink_loop(tmp_path)
    hmap, seg, ct = case / "map.nrrd", case / "case" / "organs.seg.nrrd", case / "case" / "ct.nrrd"
    manifest = tmp_path / "m.csv"
    write_manifest(manifest, [{"case_id": "a", "ct": loop.name}], ["case_id", "ct"])  # relative: resolved
    argv = {"json": ["evaluate", hmap, "--masks", seg, "--json", loop],
            "json-inside": ["evaluate", hmap, "--masks", seg, "--json", loop / "m.json"],
            "render-out": ["render", ct, hmap, "--out", loop / "x.png"],
            "manifest-ct": ["batch", manifest, "--model", "demo", "--out", tmp_path / "out"],
            "batch-manifest": ["batch", loop, "--model", "demo", "--out", tmp_path / "out"]}[where]
    before = sha([case])
    one_error(capfd, argv, "loop-a", "symbolic link loop")
    assert sha([case]) == before and not (tmp_path / "out").exists()


# ---- 3. outputs appear complete or not at all ----------------------------------------------------
def leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir())


def test_a_volume_write_that_fails_midway_leaves_no_file(tmp_path, monkeypatch):
    real = sitk.WriteImage

    def full_disk(image, name, *args):
        Path(name).write_bytes(b"NRRD0004\n" + b"\0" * 4096)  # the part that fitted
        raise RuntimeError(f"Could not write {name}: No space left on device")

    volume = Volume(np.ones((4, 5, 6), np.float32))
    previous = write_volume(volume, tmp_path / "map.nrrd")
    before = sha([previous])
    monkeypatch.setattr(sitk, "WriteImage", full_disk)
    for name in ("map.nrrd", "new.nrrd", "new.nii.gz"):
        with pytest.raises(InputError, match=f"{name}: cannot be written .*No space left"):
            write_volume(volume.with_array(volume.array * 2), tmp_path / name)
    assert leftovers(tmp_path) == ["map.nrrd"] and sha([previous]) == before  # the old file is whole
    monkeypatch.setattr(sitk, "WriteImage", real)
    write_volume(volume, tmp_path / "new.nii.gz")
    assert leftovers(tmp_path) == ["map.nrrd", "new.nii.gz"]  # the suffix picked the format, as before
    assert sitk.ReadImage(str(tmp_path / "new.nii.gz")).GetSize() == (6, 5, 4)


def test_a_segmentation_write_that_fails_midway_leaves_no_file(tmp_path, monkeypatch):
    import nrrd

    mask = np.zeros((4, 5, 6), bool)
    mask[1:3, 1:3, 1:3] = True
    segments = Segments([Segment("liver", mask)], Volume(np.zeros((4, 5, 6))))

    def full_disk(name, *args, **kwargs):
        Path(name).write_bytes(b"NRRD0004\n# Complete NRRD file format specification at")
        raise OSError(28, "No space left on device", name)

    monkeypatch.setattr(nrrd, "write", full_disk)
    with pytest.raises(InputError, match="organs.seg.nrrd: cannot be written .*No space left"):
        write_segments(segments, tmp_path / "organs.seg.nrrd")
    assert leftovers(tmp_path) == []


def test_a_case_result_that_fails_to_write_leaves_no_file(tmp_path, monkeypatch):
    real = Path.write_text

    def full_disk(self, text, *args, **kwargs):
        real(self, text[:10])
        raise OSError(28, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError):
        case_module._write_atomically(tmp_path / "result.json", {"status": "ok"})
    assert leftovers(tmp_path) == []


# ---- 4. one file per name ------------------------------------------------------------------------
def test_names_that_sanitise_alike_get_their_own_files_and_simple_names_keep_theirs():
    for simple in ("liver", "lung_left", "kidney-right", "case0001", "A.b_c-1"):
        assert safe_name(simple) == simple  # the files of ordinary names are the ones of before
    assert safe_name("a/b") == "a_b~c14cddc0" and safe_name("a_b") == "a_b"  # stable across runs
    names = ["a/b", "a_b", "a b", "a:b", "肝臓", "肝脏", "", ".", "..", "x" * 300, "x" * 301]
    files = [safe_name(n) for n in names]
    assert len(set(files)) == len(names), files
    assert all(len(f) < 140 and "/" not in f and f not in (".", "..", "") for f in files)


def test_case_ids_get_one_folder_each_and_a_case_only_collision_is_refused(case, tmp_path):
    ct = case / "case" / "ct.nrrd"
    assert case_folder(tmp_path, "a/b") != case_folder(tmp_path, "a_b")
    assert case_folder(tmp_path, "肝臓").parent == case_folder(tmp_path, "肝脏").parent == tmp_path / "cases"
    assert case_folder(tmp_path, "肝臓") != case_folder(tmp_path, "肝脏")
    ids = ("a/b", "a_b", "肝臓", "肝脏")
    ok = write_manifest(tmp_path / "ok.csv", [{"case_id": i, "ct": str(ct)} for i in ids], ["case_id", "ct"])
    assert tuple(c.case_id for c in read_manifest(ok)) == ids
    clash = write_manifest(tmp_path / "clash.csv", [{"case_id": i, "ct": str(ct)} for i in ("Case1", "case1")],
                           ["case_id", "ct"])
    with pytest.raises(InputError, match=r"row 2 \(case1\): case_id would share its output folder with row 1 "
                                         r"\(Case1\)"):
        read_manifest(clash)


# ---- 5. workers die with their parent ------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is dead, waiting for whoever adopted it to reap it


def _children(pid: int) -> list:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_batch_workers_die_with_a_killed_parent(tmp_path):
    manifest = phantom_cohort(tmp_path / "cohort", 4, seed=4, size=(32, 32, 20))
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    parent = subprocess.Popen([sys.executable, "-m", "saliency_inspector.cli", "batch", str(manifest), "--model",
                               "demo", "--workers", "2", "--out", str(out), "--resamples", "200"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        workers = []
        while time.monotonic() < deadline and parent.poll() is None:
            workers = [p for p in _children(parent.pid)
                       if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
            if len(workers) == 2 and (out / "cases").is_dir() and any((out / "cases").iterdir()):
                break  # both workers started, at least one is on a case
            time.sleep(0.2)
        assert len(workers) == 2 and parent.poll() is None, "the batch ended before its workers could be seen"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(map(_alive, workers)):
            time.sleep(0.2)
        assert not any(map(_alive, workers)), "worker processes outlived their killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in _children(parent.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


# ---- 6. one run per output folder; one file per output -------------------------------------------
def test_a_second_batch_into_a_busy_folder_is_refused(case, capfd, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    manifest = write_manifest(tmp_path / "m.csv", [{"case_id": "a", "ct": str(case / "case" / "ct.nrrd")}],
                              ["case_id", "ct"])
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from saliency_inspector.cohort.lock import output_lock\n"
                               "with output_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)",
                               str(out)], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = sha([manifest, case / "case"])
        one_error(capfd, ["batch", manifest, "--model", "demo", "--out", out, "--resamples", "200"],
                  str(out), "another batch run", f"process {holder.pid}")
        assert leftovers(out) == [LOCK_FILE] and sha([manifest, case / "case"]) == before
    finally:
        holder.kill()  # kill -9: the kernel drops its lock, the stale file blocks no one
        holder.wait()
    with output_lock(out):
        assert json.loads("1") == 1
    assert leftovers(out) == []  # a run leaves no lock file behind


@pytest.mark.parametrize("spelling", ["same", "relative", "symlink"])
def test_json_and_csv_naming_one_file_is_refused(case, capfd, tmp_path, monkeypatch, spelling):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "rows.out"
    other = {"same": target, "relative": Path("rows.out"), "symlink": tmp_path / "link.out"}[spelling]
    if spelling == "symlink":
        target.write_text("kept\n")
        other.symlink_to(target)
    before = sha([case])
    one_error(capfd, ["evaluate", case / "map.nrrd", "--masks", case / "case" / "organs.seg.nrrd",
                      "--json", target, "--csv", other], "--json and --csv both name")
    assert sha([case]) == before
    assert (not target.exists()) if spelling != "symlink" else target.read_text() == "kept\n"
