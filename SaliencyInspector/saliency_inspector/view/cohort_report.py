"""The cohort page of `saliency-inspector batch`: one plot per metric, interval tables, worst cases.

Each plot shows, per class, every case as a point (its map against the class's organ, and against
the class's lesion where the case has one), the cohort mean with its bootstrap 95 % interval as a
bar, and the methods side by side. Tables: the model's ROC AUC per class, the intervals split by
label and by prediction, the methods compared with each other across cases (paired Wilcoxon,
Holm-corrected p, rank-biserial effect: no method is called better without it), the worst cases
(linked to their case pages) and the failed cases.
Inputs are the plain rows the batch writes (``cohort.csv``, ``per_case.csv``, ``predictions.csv``).
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import numpy as np

from ..explainers.registry import method_label
from ..io.records import format_cell as _num, is_missing
from .figures import PAGE_STYLE, pyplot, save_figure

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
WORST = 10  # rows of the worst-cases table per method
SPLITS = ("all", "present", "absent", "correct", "incorrect")


def plot_metric(metric: str, meaning: str, stats, rows, out_png, seed: int = 0) -> Path | None:
    """One PNG for one metric: per class and method, cases as points and mean ± interval as a bar,
    against the class's organ (left) and the class's lesion (right). None when nothing to plot."""
    plt = pyplot()

    methods = list(dict.fromkeys(r["method"] for r in rows))
    classes = list(dict.fromkeys(r["class"] for r in rows))
    panels = [("organ of the class", lambda c: c), ("lesion of the class", lambda c: f"lesion_{c}")]
    interval = {(s["method"], s["class"], s["segment"]): s for s in stats
                if s["metric"] == metric and s["group"] == "all"}
    values = {}
    for r in rows:
        if not is_missing(r.get(metric)):
            values.setdefault((r["method"], r["class"], r["segment"]), []).append(float(r[metric]))
    if not any((m, c, seg(c)) in values for m in methods for c in classes for _, seg in panels):
        return None
    rng = np.random.default_rng(seed)  # jitter of the points only
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), dpi=100, sharey=True)
    width = 0.8 / max(1, len(methods))
    for ax, (title, seg) in zip(axes, panels):
        for j, method in enumerate(methods):
            color = COLORS[j % len(COLORS)]
            for i, klass in enumerate(classes):
                key = (method, klass, seg(klass))
                x = i - 0.4 + width * (j + 0.5)
                ys = values.get(key, [])
                ax.scatter(x + rng.uniform(-0.25, 0.25, len(ys)) * width, ys, s=9, color=color, alpha=0.45,
                           linewidths=0, label=method_label(method) if i == 0 else None)
                s = interval.get(key)
                if s and not is_missing(s["mean"]):
                    low, high = s["ci_low"], s["ci_high"]
                    ax.errorbar([x], [s["mean"]], yerr=[[s["mean"] - low], [high - s["mean"]]], fmt="_",
                                color="black", markersize=14, capsize=4, lw=1.5)
        ax.set_xticks(range(len(classes)))
        ax.set_xticklabels(classes, rotation=20)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(metric)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(f"{metric}: {meaning} — points: cases; bar: mean and 95 % bootstrap interval", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_png)


def write_cohort_report(out_html, *, stats, rows, predictions, auc, errors, metrics, case_pages,
                        title="SaliencyInspector cohort", gaze=None, tests=(), quality=()) -> Path:
    """Write the cohort page (and its plots under ``images/``); return its path.

    ``stats``: rows of ``cohort.csv``; ``rows``: rows of ``per_case.csv``; ``predictions``: rows of
    ``predictions.csv``; ``auc``: the model's ROC AUC per class; ``errors``: failed cases
    (``case_id``, ``error``); ``metrics``: keys to plot; ``case_pages``: case id -> relative link;
    ``tests``: rows of ``method_tests.csv`` (:func:`cohort.stats.method_comparisons`); ``quality``:
    keys of :data:`scoring.quality.QUALITY_METRICS` summarised in ``stats`` (a table and tests of their own).
    """
    from ..scoring.metrics import METRICS
    from ..scoring.quality import QUALITY_METRICS

    out_html = Path(out_html)
    base = out_html.parent
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
             f"<style>{PAGE_STYLE}</style></head><body><h1>{escape(title)}</h1>",
             f"<p class='muted'>{len(case_pages)} cases done, {len(errors)} failed. Intervals: percentile "
             "bootstrap 95 % of the mean over cases. Voxels are ranked over the body by each method's declared "
             f"importance: {escape(_importances(rows))}.</p>"]

    parts.append("<h2>The model</h2><table><tr><th class='name'>class</th><th>cases</th><th>present</th>"
                 "<th>ROC AUC</th><th>95 % interval</th></tr>")
    for a in auc:
        parts.append(f"<tr><td class='name'>{escape(a['class'])}</td><td>{a['n']}</td><td>{a['positives']}</td>"
                     f"<td>{_num(a['roc_auc'])}</td><td>{_num(a['ci_low'])} – {_num(a['ci_high'])}</td></tr>")
    parts.append("</table>")

    parts.append("<h2>Agreement with the masks</h2>")
    for metric in metrics:
        info = METRICS[metric]
        png = plot_metric(metric, info.meaning, stats, rows, base / "images" / f"cohort_{metric}.png")
        if png is not None:
            parts.append(f"<figure><img src='{escape(png.relative_to(base).as_posix())}' alt='{escape(metric)}'>"
                         f"<figcaption>{escape(info.name)}{f' ({escape(info.unit)})' if info.unit else ''}: "
                         f"{escape(info.meaning)}</figcaption></figure>")

    parts.append("<h2>Intervals by label and prediction (organ of the class)</h2>")
    parts.append(_interval_table(stats, metrics))
    if quality:
        parts.append("<h2>Map quality by label and prediction (Quantus's families in 3-D, organ of the class)</h2>"
                     "<p class='muted'>Mask-only metrics of every map, per case, summarised over cases like the "
                     "ones above (the complexity family is one value per map: the same for every segment). "
                     + escape("; ".join(f"{QUALITY_METRICS[k].label}: {'higher' if QUALITY_METRICS[k].higher_is_better else 'lower'}"
                                        " is better" for k in quality)) + ".</p>")
        parts.append(_interval_table(stats, quality, {k: QUALITY_METRICS[k].label for k in quality}))

    parts.append(_tests_table(tests, [*metrics, *quality]))

    worst_metric = metrics[0] if metrics else "roc_auc"
    parts.append(f"<h2>Worst cases ({escape(worst_metric)} of the map against the organ of the class, "
                 "classes present)</h2>")
    label = {(p["case_id"], p["class"]): p for p in predictions}
    for method in dict.fromkeys(r["method"] for r in rows):
        candidates = [r for r in rows if r["method"] == method and r["segment"] == r["class"]
                      and not is_missing(r.get(worst_metric))
                      and label.get((r["case_id"], r["class"]), {}).get("label") in (1, None)]
        candidates.sort(key=lambda r: (float(r[worst_metric]), r["case_id"]))
        parts.append(f"<h3>{escape(method_label(method))}</h3><table><tr><th class='name'>case</th>"
                     f"<th class='name'>class</th><th>{escape(worst_metric)}</th><th>p</th><th>label</th></tr>")
        for r in candidates[:WORST]:
            p = label.get((r["case_id"], r["class"]), {})
            link = case_pages.get(r["case_id"])
            name = escape(r["case_id"])
            name = f"<a href='{escape(link)}'>{name}</a>" if link else name
            parts.append(f"<tr><td class='name'>{name}</td><td class='name'>{escape(r['class'])}</td>"
                         f"<td>{_num(r[worst_metric])}</td><td>{_num(p.get('probability'))}</td>"
                         f"<td>{'' if p.get('label') is None else p['label']}</td></tr>")
        parts.append("</table>")

    if gaze:
        parts.append(_gaze_section(gaze))
    if errors:
        parts.append("<h2>Failed cases</h2><table><tr><th class='name'>case</th><th class='name'>reason</th></tr>")
        for e in errors:
            parts.append(f"<tr><td class='name'>{escape(e['case_id'])}</td><td class='name'>{escape(e['error'])}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Metrics</h2><ul>" + "".join(
        f"<li><b>{escape(METRICS[m].name)}</b> ({escape(m)}): {escape(METRICS[m].meaning)}</li>" for m in metrics)
        + "".join(f"<li><b>{escape(QUALITY_METRICS[k].label)}</b> ({escape(k)}, {escape(QUALITY_METRICS[k].family)}; "
                  f"follows {escape(QUALITY_METRICS[k].source)}): {escape(QUALITY_METRICS[k].meaning)}</li>"
                  for k in quality)
        + "</ul></body></html>")
    out_html.write_text("\n".join(parts), encoding="utf-8")
    return out_html


def _interval_table(stats, keys, labels=None) -> str:
    """Mean [95 % interval] n per method, class and metric (rows of ``keys``) in each group of
    :data:`SPLITS`, on the organ of the class; ``labels``: key -> the name shown."""
    out = ["<table><tr><th class='name'>method</th><th class='name'>class</th><th class='name'>metric</th>"
           + "".join(f"<th>{g}</th>" for g in SPLITS) + "</tr>"]
    cell = {(s["method"], s["class"], s["metric"], s["group"]): s for s in stats if s["segment"] == s["class"]}
    for method, klass, metric in dict.fromkeys((s["method"], s["class"], s["metric"]) for s in stats
                                               if s["segment"] == s["class"] and s["metric"] in keys):
        tds = []
        for group in SPLITS:
            s = cell.get((method, klass, metric, group))
            tds.append("<td class='muted'>–</td>" if not s or not s["n"] else
                       f"<td>{_num(s['mean'])} [{_num(s['ci_low'])}, {_num(s['ci_high'])}] n={s['n']}</td>")
        name = (labels or {}).get(metric, metric)
        out.append(f"<tr><td class='name'>{escape(method_label(method))}</td><td class='name'>{escape(klass)}</td>"
                   f"<td class='name'>{escape(name)}</td>{''.join(tds)}</tr>")
    return "".join(out) + "</table>"


def _gaze_section(gaze) -> str:
    """The readers' gaze over the cohort: mean [95 % interval over images], the inter-observer baseline,
    the paired difference and the verdicts (``cohort/gaze.py``)."""
    out = ["<h2>Agreement with readers' gaze</h2><p class='muted'>per image: the map and each held-out reader "
           "against the mean of the other readers; centre bias: the mean heatmap of all images aligned by the "
           "body box; sAUC negatives: other images' fixations; intervals: bootstrap over images</p>",
           "<table><tr><th class='name'>method</th><th class='name'>class</th><th class='name'>metric</th><th>n</th>"
           "<th>map</th><th>inter-observer</th><th>map − inter-observer</th><th class='name'>verdict</th></tr>"]
    for g in gaze:
        out.append(f"<tr><td class='name'>{escape(method_label(g['method']))}</td><td class='name'>{escape(g['class'])}"
                   f"</td><td class='name'>{escape(g['metric'])}</td><td>{g['n']}</td>"
                   f"<td>{_num(g['mean'])} [{_num(g['ci_low'])}, {_num(g['ci_high'])}]</td>"
                   f"<td>{_num(g['inter_observer'])} [{_num(g['io_ci_low'])}, {_num(g['io_ci_high'])}]</td>"
                   f"<td>{_num(g['difference'])} [{_num(g['diff_ci_low'])}, {_num(g['diff_ci_high'])}]</td>"
                   f"<td class='name' title='{escape(g['why'])}'>{escape(g['verdict'])}</td></tr>")
    return "".join(out) + "</table>"


def _importances(rows) -> str:
    """"Method: transform" for every method of the rows (ReLU(map) where a row does not say)."""
    from ..scoring.importance import describe

    seen = dict.fromkeys((r["method"], r.get("importance") or "relu") for r in rows)
    return "; ".join(f"{method_label(m)}: {describe(i)}" for m, i in seen) or "none scored"


def _tests_table(tests, metrics) -> str:
    """The paired tests between methods (organ and lesion of each class, the plotted metrics)."""
    shown = [t for t in tests if t["metric"] in metrics and t["segment"] in (t["class"], f"lesion_{t['class']}")]
    head = ("<h2>Methods compared across cases</h2><p class='muted'>Paired Wilcoxon signed-rank test over the "
            "cases both methods were scored on (zero differences dropped), p Holm-corrected over the method pairs "
            "of each class, segment and metric; effect: matched-pairs rank-biserial r (+1: the first method "
            "higher in every case). Difference: mean of first − second with its bootstrap 95 % interval. "
            "A method is called better only when the corrected p &lt; 0.05.</p>")
    if not shown:
        return head + "<p class='muted'>No comparison: it needs at least two methods scored on the same cases.</p>"
    cells = ["<table><tr><th class='name'>class</th><th class='name'>segment</th><th class='name'>metric</th>"
             "<th class='name'>methods</th><th>n</th><th>difference [95 %]</th><th>p</th><th>p (Holm)</th>"
             "<th>effect r</th><th class='name'>verdict</th></tr>"]
    for t in shown:
        pair = f"{method_label(t['method_a'])} − {method_label(t['method_b'])}"
        cells.append(f"<tr><td class='name'>{escape(t['class'])}</td><td class='name'>{escape(t['segment'])}</td>"
                     f"<td class='name'>{escape(t['metric'])}</td><td class='name'>{escape(pair)}</td>"
                     f"<td>{t['n']}</td><td>{_num(t['mean_difference'])} [{_num(t['ci_low'])}, {_num(t['ci_high'])}]"
                     f"</td><td>{_num(t['p'])}</td><td>{_num(t['p_holm'])}</td><td>{_num(t['rank_biserial'])}</td>"
                     f"<td class='name'>{escape(t['verdict'])}</td></tr>")
    return head + "".join(cells) + "</table>"
