"""Compare estimators over a cohort: :func:`compare_estimators` on every case of a manifest, then a
paired test of every pair of methods on every measure across the cases.

One case ranks methods on that case only; whether one method beats another is a claim about cases
in general, so it needs many cases and a paired test: the Wilcoxon signed-rank test over the cases
both methods were scored on, Holm-corrected over the method pairs of each measure, with the
matched-pairs rank-biserial effect (:mod:`scoring.paired_tests`). A case that cannot be compared
(no masks, an empty segment) is left out with its one-line reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..io.records import write_csv, write_json
from .compare import COLUMNS, MEASURES

TEST_COLUMNS = ("measure", "method_a", "method_b", "n", "n_nonzero", "mean_difference", "ci_low", "ci_high",
                "median_difference", "statistic", "p", "p_holm", "rank_biserial", "verdict")


@dataclass
class CohortComparison:
    """Per-case rows (``case_id`` + :data:`workflows.compare.COLUMNS`), the paired tests (one row per
    measure and method pair) and the cases left out (case id -> reason)."""

    rows: list
    tests: list
    skipped: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def write_json(self, path) -> Path:
        """Rows, tests, skipped cases and run info as JSON (NaN as null)."""
        return write_json(path, {"rows": self.rows, "tests": self.tests, "skipped": self.skipped, **self.info})

    def write_csv(self, path) -> Path:
        """The paired tests as CSV (the per-case rows are in the JSON)."""
        return write_csv(path, self.tests, list(TEST_COLUMNS))

    def format(self) -> str:
        """The tests as a fixed-width table."""
        lines = [f"{len({r['case_id'] for r in self.rows})} cases compared ({len(self.skipped)} left out); "
                 "paired Wilcoxon signed-rank, Holm over the method pairs of each measure, effect r = rank-biserial"]
        lines.append(f"{'measure':<24} {'first - second':<28} {'n':>3} {'mean diff':>10} {'p':>8} {'p Holm':>8} "
                     f"{'r':>6}  verdict")
        for t in self.tests:
            pair = f"{t['method_a']} - {t['method_b']}"
            lines.append(f"{t['measure']:<24} {pair:<28} {t['n']:>3} {t['mean_difference']:>10.4f} {t['p']:>8.4f} "
                         f"{t['p_holm']:>8.4f} {t['rank_biserial']:>6.2f}  {t['verdict']}")
        lines += [f"left out: {case}: {why}" for case, why in self.skipped.items()]
        return "\n".join(lines)


def compare_cohort(classifier, manifest, class_name, methods=("hirescam", "gradcam", "gradient", "smoothgrad", "ig"),
                   segment=None, settings=None, steps: int = 20, replacement: str = "blur", blur_mm: float = 10.0,
                   seed: int = 0, random_maps: int | None = None, progress=None) -> CohortComparison:
    """:func:`workflows.compare.compare_estimators` on every case of ``manifest`` (a path or a read
    :class:`io.manifest.Manifest`; each case's ``organs`` and ``lesions`` files are its masks), then
    every pair of ``methods`` tested on every measure across the cases (module doc). The other
    arguments are :func:`compare_estimators`'s."""
    from ..cohort.case import _case_segments
    from ..io.manifest import Manifest, read_manifest
    from ..io.volume import read_volume
    from ..scoring.paired_tests import compare_methods
    from .compare import compare_estimators

    say = progress or (lambda _m: None)
    cohort = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    methods = [methods] if isinstance(methods, str) else list(methods)
    if len(methods) < 2:
        raise InputError("a cohort comparison needs at least two methods")
    rows, skipped = [], {}
    for case in cohort:
        say(f"case {case.case_id}")
        ct = read_volume(case.ct)
        masks = _case_segments(case, ct)
        if masks is None:
            skipped[case.case_id] = "the manifest gives no organs or lesions file"
            continue
        try:
            result = compare_estimators(classifier, ct, masks, class_name, methods=methods, segment=segment,
                                        settings=settings, steps=steps, replacement=replacement, blur_mm=blur_mm,
                                        seed=seed, random_maps=random_maps)
        except InputError as error:  # e.g. the segment is empty in this case: left out, said why
            skipped[case.case_id] = str(error)
            continue
        rows += [{"case_id": case.case_id, **{k: r.get(k) for k in COLUMNS}} for r in result.rows]
    tests = []
    for measure, (_title, higher) in MEASURES.items():
        values = {m: {r["case_id"]: r[measure] for r in rows if r["method"] == m} for m in methods}
        tests += compare_methods(values, measure, higher, seed=seed)
    return CohortComparison(rows, tests, skipped, info={
        "class": class_name, "methods": methods, "steps": int(steps), "replacement": replacement,
        "test": "paired Wilcoxon signed-rank across cases (zeros dropped), Holm over the method pairs of each "
                "measure, matched-pairs rank-biserial effect"})
