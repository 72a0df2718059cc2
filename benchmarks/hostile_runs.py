"""Issue 23's hostile list, re-run through the CLI: one subprocess per hostile input, then a table.

For every input: what the issue expects (a refusal: exit 2 and ONE line ``saliency-inspector: error: …``;
or a warning/notice with exit 0), what happened (exit code, the stderr line that matters, whether a
traceback appeared), whether every input file is byte-for-byte unchanged, and whether anything partial
was left where an output was asked for.

    PYTHONPATH=SaliencyInspector python benchmarks/hostile_runs.py [--work DIR] [--markdown]

Inputs are small synthetic phantoms (48×48×32, the demo model's classes), made in ``--work`` (default:
a temporary folder). Takes ~3 minutes on 2 shared cores (each run imports torch).
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent / "SaliencyInspector"
CLI = "import sys; from saliency_inspector.cli import main; sys.argv[0] = 'saliency-inspector'; sys.exit(main())"


@dataclass
class Hostile:
    """One hostile run: its section of issue 23, the input in words, the argv, what it must do."""

    section: str
    what: str
    argv: list
    expect_rc: int = 2
    says: str = ""  # a substring of the decisive stderr line
    inputs: list = field(default_factory=list)  # files/folders that must stay unchanged
    absent: list = field(default_factory=list)  # outputs that must not exist afterwards
    setup: object = None  # called just before the run (returns a cleanup callable or None)


def digest(paths) -> str:
    """sha256 over every file under ``paths`` (names and bytes; links not followed)."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        files = sorted(q for q in p.rglob("*") if q.is_file() and not q.is_symlink()) if p.is_dir() else [p]
        for f in files:
            if f.is_symlink() or not f.exists():
                h.update(f"{f}:link-or-missing".encode())
                continue
            h.update(str(f).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def make_inputs(work: Path) -> dict:
    """The phantoms, maps, masks and broken files the hostile runs read."""
    import nrrd

    import saliency_inspector as si
    from saliency_inspector.io.manifest import write_manifest
    from saliency_inspector.io.segments import Segment, Segments

    case = si.make_phantom(seed=3, size=(48, 48, 32), lesions=["liver", "lung_left"], lesion_scale=1.8)
    si.write_phantom_case(case, work / "case")
    # two patients as test_cli_hardening's fixture: phantoms share one body in patient space, so the
    # body check needs a fine CT (128×128×40) against another seed, size and tilt (see docs/finish2223.md)
    si.write_phantom_case(si.make_phantom(seed=0, size=(128, 128, 40)), work / "patient_a")
    si.write_phantom_case(si.make_phantom(seed=7, size=(160, 160, 48), oblique=True), work / "other")
    si.write_phantom_case(si.make_phantom(seed=9, size=(48, 48, 32), lesions=["liver"]), work / "other48")
    only_liver = si.make_phantom(seed=3, size=(48, 48, 32), lesions=["liver"], lesion_scale=1.8)
    si.write_segments(only_liver.lesions, work / "liver_lesion.seg.nrrd")
    ct = case.ct
    mirrored = Segments([Segment(s.name, s.mask[:, :, ::-1].copy(), s.color) for s in case.organs], case.organs.grid)
    si.write_segments(mirrored, work / "mirrored.seg.nrrd")
    hmap = ct.with_array(np.asarray(ct.array, np.float32) / 1000.0)
    si.write_volume(hmap, work / "hirescam_liver.nrrd")
    holes = np.asarray(hmap.array).copy()
    holes[5, 5, 5] = np.nan
    si.write_volume(hmap.with_array(holes), work / "nan_map.nrrd")
    si.write_volume(si.Volume(np.asarray(hmap.array), hmap.spacing, np.asarray(hmap.origin) + 150.0, hmap.direction),
                    work / "shifted_map.nrrd")
    labels = np.zeros(ct.shape, np.int64)
    labels[4, 5, 6] = 1
    labels[6, 7, 8] = 2_000_000_000
    si.write_volume(ct.with_array(labels), work / "label_2e9.nrrd")
    labels[6, 7, 8] = 10**12
    si.write_volume(ct.with_array(labels.astype(np.float64)), work / "label_1e12.nrrd")
    (work / "empty.seg.nrrd").touch()
    data, header = nrrd.read(str(work / "case" / "organs.seg.nrrd"))
    header["Segment1_Layer"] = "7"
    nrrd.write(str(work / "missing_layer.seg.nrrd"), data, header)
    (work / "loop-a").symlink_to(work / "loop-b")
    (work / "loop-b").symlink_to(work / "loop-a")
    rng = np.random.default_rng(0)
    cts = {"one_voxel": (np.full((1, 1, 1), 40, np.int16), (1.0,) * 3),
           "one_slice": (rng.integers(-1000, 1000, (1, 16, 16)).astype(np.int16), (1.0,) * 3),
           "spacing_100mm": (rng.integers(-1000, 1000, (8, 8, 8)).astype(np.int16), (100.0,) * 3),
           "spacing_1e-6mm": (rng.integers(-1000, 1000, (8, 8, 8)).astype(np.int16), (1e-6,) * 3),
           "int8": (rng.integers(-128, 127, (8, 8, 8)).astype(np.int8), (1.0,) * 3),
           "constant": (np.full((8, 8, 8), 40, np.int16), (1.0,) * 3)}
    for name, (array, spacing) in cts.items():
        si.write_volume(si.Volume(array, spacing), work / f"ct_{name}.nrrd")
    air = ct.with_array(np.full(ct.shape, -1000, np.int16))
    air.array[0, 0, 0] = -999  # not constant, but no body
    si.write_volume(air, work / "ct_air.nrrd")
    nan_heat = hmap.with_array(np.full(ct.shape, np.nan, np.float32))
    si.write_volume(nan_heat, work / "nan_heatmap.nrrd")
    centre = np.asarray(ct.origin) + np.asarray(ct.spacing) * np.asarray(ct.size_xyz) / 2
    with open(work / "one_fixation.csv", "w") as f:
        f.write("x,y,z\n" + ",".join(f"{c:.1f}" for c in centre) + "\n")
    cohort = si.phantom_cohort(work / "cohort", 2, seed=1, size=(32, 32, 20))
    rows = [{"case_id": i, "ct": str(work / "case" / "ct.nrrd")} for i in ("Case1", "case1")]
    write_manifest(work / "clash.csv", rows, ["case_id", "ct"])
    with open(work / "newline.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "ct"])
        w.writerow(["a\nb", str(work / "case" / "ct.nrrd")])
    (work / "garbage.pt").write_bytes(b"not a model at all")
    card = json.loads((PACKAGE / "Resources" / "Models" / "demo-phantom-lesions.json").read_text())
    card["classes"] = ["a/b", "a_b", "liver", "kidney"]
    (work / "colliding_classes.json").write_text(json.dumps(card))
    (work / "names.json").write_text('{"1": "liver"}')
    (work / "busy").mkdir()
    (work / "readonly").mkdir()
    os.chmod(work / "readonly", 0o555)
    os.symlink(work / "case" / "organs.seg.nrrd", work / "masks_link.png")
    os.link(work / "case" / "organs.seg.nrrd", work / "masks_hardlink.png")
    return {"cohort": Path(cohort)}


def hostile_list(w: Path, made: dict) -> list:
    """Every hostile run (issue 23's sections), built on the inputs of :func:`make_inputs`."""
    ct, lesions, organs = w / "case" / "ct.nrrd", w / "case" / "lesions.seg.nrrd", w / "case" / "organs.seg.nrrd"
    hmap, model = w / "hirescam_liver.nrrd", ["--model", "demo"]
    case_in = [w / "case", hmap]
    ev = ["evaluate", hmap, "--masks"]
    out = w / "out"

    def hold_lock():
        from saliency_inspector.cohort.lock import LOCK_FILE

        handle = open(w / "busy" / LOCK_FILE, "w")
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return handle.close

    L, T, A, R = ("data lost / silently wrong", "tracebacks", "accepted without a word", "README as a newcomer")
    runs = [
        Hostile(L, "classes 'a/b' and 'a_b' (file names that sanitise alike)",
                ["explain", ct, "--model", PACKAGE / "Resources/Models/demo-phantom-lesions.pt", "--card",
                 w / "colliding_classes.json", "--class", "all", "--out", out / "c1"], 0, "",
                case_in, [], None),
        Hostile(L, "manifest ids 'Case1' and 'case1' (one case folder)", ["batch", w / "clash.csv", *model, "--out",
                out / "b1"], 2, "would share its output folder", [w / "clash.csv"], [out / "b1"]),
        Hostile(L, "compare with another patient's masks", ["compare", w / "patient_a" / "ct.nrrd", *model, "--masks",
                w / "other" / "organs.seg.nrrd", "--class", "liver", "--segment", "liver", "--out", out / "cmp"], 2,
                "do not seem to describe", [w / "patient_a", w / "other"], [out / "cmp"]),
        Hostile(L, "trust with another patient's masks", ["trust", w / "patient_a" / "ct.nrrd", *model, "--class",
                "liver", "--masks", w / "other" / "organs.seg.nrrd", "--segment", "liver", "--out", out / "t1"], 2,
                "do not seem to describe", [w / "patient_a", w / "other"], [out / "t1"]),
        Hostile(L, "compare with masks of another same-size phantom (bodies agree)", ["compare", ct, *model,
                "--masks", w / "other48" / "organs.seg.nrrd", "--class", "liver", "--segment", "liver", "--method",
                "hirescam", "--fidelity-steps", "3", "--out", out / "cmp48"], 0, "", case_in + [w / "other48"], []),
        Hostile(L, "masks mirrored left/right (evaluate)", [*ev, w / "mirrored.seg.nrrd", "--ct", ct, "--json",
                out / "m.json"], 2, "mirrored", case_in + [w / "mirrored.seg.nrrd"], [out / "m.json"]),
        Hostile(L, "trust --class lung_left, masks hold only lesion_liver", ["trust", ct, *model, "--class",
                "lung_left", "--masks", w / "liver_lesion.seg.nrrd", "--out", out / "t2"], 2, "--segment",
                case_in + [w / "liver_lesion.seg.nrrd"], [out / "t2"]),
        Hostile(L, "a labelmap with one voxel labelled 2e9", [*ev, w / "label_2e9.nrrd", "--json", out / "l.json"], 0,
                "", [hmap, w / "label_2e9.nrrd"], []),
        Hostile(L, "--json X --csv X (one file)", [*ev, organs, "--json", out / "x.out", "--csv", out / "x.out"], 2,
                "--json and --csv both name", case_in, [out / "x.out"]),
        Hostile(L, "a second batch into a folder another batch holds", ["batch", made["cohort"], *model, "--out",
                w / "busy"], 2, "another batch run", [made["cohort"]], [w / "busy" / "cohort.csv"], hold_lock),
        Hostile(T, "a symbolic link loop as the map", ["evaluate", w / "loop-a", "--masks", organs], 2,
                "loop-a", case_in, []),
        Hostile(T, "an empty .seg.nrrd", [*ev, w / "empty.seg.nrrd"], 2, "the file is empty", case_in, []),
        Hostile(T, "a segment in a missing layer", [*ev, w / "missing_layer.seg.nrrd"], 2, "layer 7",
                case_in + [w / "missing_layer.seg.nrrd"], []),
        Hostile(T, "a NaN heatmap as fixations", ["trust", ct, *model, "--class", "liver", "--skip-randomization",
                "--fixations", w / "nan_heatmap.nrrd", "--out", out / "t3"], 2, "", case_in, [out / "t3"]),
        Hostile(T, "a label of 1e12", [*ev, w / "label_1e12.nrrd", "--json", out / "l2.json"], 2, "outside the range",
                [hmap, w / "label_1e12.nrrd"], [out / "l2.json"]),
        Hostile(T, "batch with an unusable model", ["batch", made["cohort"], "--model", w / "garbage.pt", "--arch",
                "DenseNet121", "--out", out / "b2"], 2, "garbage.pt", [made["cohort"], w / "garbage.pt"], [out / "b2"]),
        *[Hostile(A, f"CT: {kind.replace('_', ' ')}", ["explain", w / f"ct_{kind}.nrrd", *model, "--out",
                  out / f"e_{kind}"], 2, says, [w / f"ct_{kind}.nrrd"], [out / f"e_{kind}"])
          for kind, says in (("one_voxel", "a single voxel"), ("one_slice", "a single slice"),
                             ("spacing_100mm", "is not a CT's"), ("spacing_1e-6mm", "is not a CT's"),
                             ("int8", "cannot hold Hounsfield units"), ("constant", "every voxel is 40"))],
        Hostile(A, "gaze verdict from one fixation", ["trust", ct, *model, "--class", "liver", "--masks", lesions,
                "--segment", "lesion_liver", "--skip-randomization", "--fixations", w / "one_fixation.csv", "--out",
                out / "t4"], 0, "", case_in + [w / "one_fixation.csv"], []),
        Hostile(A, "render --at nan,0,0", ["render", ct, hmap, "--at", "nan,0,0", "--out", out / "r1.png"], 2,
                "three finite numbers", case_in, [out / "r1.png"]),
        Hostile(A, "render --at outside the CT", ["render", ct, hmap, "--at", "5000,0,0", "--out", out / "r2.png"], 2,
                "lies outside the CT", case_in, [out / "r2.png"]),
        Hostile(A, "render a map with a NaN", ["render", ct, w / "nan_map.nrrd", "--out", out / "r3.png"], 2,
                "NaN or infinite", case_in + [w / "nan_map.nrrd"], [out / "r3.png"]),
        Hostile(A, "render a map on another grid (shifted 150 mm)", ["render", ct, w / "shifted_map.nrrd", "--out",
                out / "r4.png"], 2, "covers only", case_in + [w / "shifted_map.nrrd"], [out / "r4.png"]),
        Hostile(A, "a manifest id with a newline", ["batch", w / "newline.csv", *model, "--out", out / "b3"], 2,
                "control character", [w / "newline.csv"], [out / "b3"]),
        Hostile(A, "evaluate --names with a .seg.nrrd", [*ev, organs, "--names", w / "names.json"], 2, "--names",
                case_in + [w / "names.json"], []),
        Hostile(A, "--json /dev/full", [*ev, organs, "--ct", ct, "--json", "/dev/full"], 2, "/dev/full", case_in, []),
        Hostile(A, "trust on a CT without a body", ["trust", w / "ct_air.nrrd", *model, "--class", "liver", "--out",
                out / "t5"], 2, "trust needs a CT", [w / "ct_air.nrrd"], [out / "t5"]),
        Hostile(R, "render --out a symlink to the masks", ["render", ct, hmap, "--masks", organs, "--out",
                w / "masks_link.png"], 2, "", case_in, []),
        Hostile(R, "render --out a hard link to the masks", ["render", ct, hmap, "--masks", organs, "--out",
                w / "masks_hardlink.png"], 2, "", case_in, []),
        Hostile(R, "evaluate --json onto the CT", [*ev, organs, "--ct", ct, "--json", ct], 2, "", case_in, []),
    ]
    if os.geteuid() != 0:  # root writes into a 0o555 folder: the refusal cannot be shown as root
        runs.append(Hostile(R, "explain --out a read-only folder", ["explain", ct, *model, "--out",
                                                                     w / "readonly" / "maps"], 2, "", case_in,
                            [w / "readonly" / "maps"]))
    return runs


def run_one(h: Hostile, env: dict, cwd: Path) -> dict:
    before = digest(h.inputs)
    cleanup = h.setup() if h.setup else None
    started = time.time()
    try:
        p = subprocess.run([sys.executable, "-c", CLI, *map(str, h.argv)], env=env, cwd=cwd, capture_output=True,
                           text=True, timeout=600)
    finally:
        if cleanup:
            cleanup()
    err = [line for line in p.stderr.splitlines() if line.strip()]
    errors = [line for line in err if line.startswith("saliency-inspector: error:")]
    warnings = [line for line in err if "WARNING" in line or "Warning" in line]
    line = errors[0] if errors else (warnings[0] if warnings else (err[-1] if err else ""))
    if h.expect_rc == 2:
        ok = p.returncode == 2 and len(errors) == 1 and h.says in errors[0]
    else:
        ok = p.returncode == h.expect_rc
    traceback = "Traceback" in p.stderr
    unchanged = digest(h.inputs) == before
    partial = [str(a) for a in h.absent if os.path.lexists(a)]
    return {"section": h.section, "input": h.what, "expected": f"exit {h.expect_rc}" + (f", '{h.says}'" if h.says else ""),
            "rc": p.returncode, "line": line[:160], "traceback": traceback, "unchanged": unchanged,
            "partial": partial, "ok": ok and not traceback and unchanged and not partial,
            "seconds": round(time.time() - started, 1), "stdout_tail": p.stdout.strip().splitlines()[-1:]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="folder for the inputs (default: a temporary one)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(PACKAGE))
    work = args.work or Path(tempfile.mkdtemp(prefix="hostile-"))
    work.mkdir(parents=True, exist_ok=True)
    made = make_inputs(work)
    env = {**os.environ, "PYTHONPATH": str(PACKAGE)}
    results = []
    for h in hostile_list(work, made):
        r = run_one(h, env, work)
        results.append(r)
        print(f"[{'ok' if r['ok'] else 'NO'}] {r['input']}: exit {r['rc']} ({r['seconds']} s) {r['line']}",
              file=sys.stderr, flush=True)
    os.chmod(work / "readonly", 0o755)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        print("| section | input | expected | exit | stderr line | traceback | inputs unchanged | partial output | ok |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in results:
            line = r["line"].replace("|", "\\|").replace(str(work), "…")
            print(f"| {r['section']} | {r['input']} | {r['expected']} | {r['rc']} | {line} | "
                  f"{'yes' if r['traceback'] else 'no'} | {'yes' if r['unchanged'] else 'NO'} | "
                  f"{', '.join(r['partial']) or 'none'} | {'ok' if r['ok'] else 'NO'} |")
    else:
        for r in results:
            print(f"{'ok' if r['ok'] else 'NO':3} {r['rc']:>3}  {r['input']:<58} {r['line']}")
    bad = [r for r in results if not r["ok"]]
    print(f"{len(results) - len(bad)} of {len(results)} hostile runs as expected", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
