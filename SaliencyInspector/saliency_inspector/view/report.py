"""One self-contained HTML report per case.

The report is a single HTML file with inline styles; its pictures are PNG files in the same output
folder, referenced by relative paths (so the folder can be zipped, moved or opened from disk).
It shows the CT's geometry, the predictions (and the truth when known), per class a row of
pictures with one column per method (HiResCAM next to Grad-CAM), the metrics tables per
(method, class), ROC curves and a one-line meaning of every metric, all taken from
:data:`saliency_inspector.scoring.metrics.METRICS`.
"""

from __future__ import annotations

import datetime as _dt
import os
from html import escape
from pathlib import Path

import numpy as np

from ..explainers.registry import method_label
from ..io.records import format_cell, is_missing
from .figures import PAGE_STYLE, pyplot, save_figure



def plot_roc(curves, out_png, title=None) -> Path:
    """Write a ROC plot (matplotlib PNG). ``curves``: iterable of (label, fpr, tpr, auc)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=100)
    ax.plot([0, 1], [0, 1], color="#999", linestyle=":", linewidth=1, label="chance (0.5)")
    for label, fpr, tpr, auc in curves:
        text = label if is_missing(auc) else f"{label} (AUC {auc:.3f})"
        ax.plot(fpr, tpr, linewidth=1.6, label=text, drawstyle="default")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (voxels outside the mask)")
    ax.set_ylabel("true positive rate (voxels in the mask)")
    ax.set_aspect("equal")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out_png)


def _num(value, digits=3) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if is_missing(value) or isinstance(value, (int, float)):
        return format_cell(value, digits)
    return escape(str(value))


def _rows_of(table):
    return list(table.rows if hasattr(table, "rows") else table)


def _metrics_table_html(table, focus=()) -> str:
    """An HTML table of one EvaluationTable (or list of row dicts); rows of ``focus`` segments in bold."""
    from ..scoring.metrics import METRICS, TABLE_KEYS

    rows = _rows_of(table)
    head = "<tr><th class='name'>segment</th>"
    for key in TABLE_KEYS:
        info = METRICS[key]
        base = f" <span class='muted'>({escape(METRICS[info.baseline_key].name.lower())})</span>" \
            if info.baseline_key else ""
        unit = f" ({escape(info.unit)})" if info.unit else ""  # e.g. Peak distance (mm)
        head += f"<th title='{escape(info.meaning)}'>{escape(info.name)}{unit}{base}</th>"
    head += "<th class='name'>note</th></tr>"
    body = []
    for row in rows:
        cls = " class='focus'" if row["segment"] in focus else ""
        cells = [f"<td class='name'>{escape(row['segment'])}</td>"]
        for key in TABLE_KEYS:
            text = _num(row.get(key))
            base = METRICS[key].baseline_key
            if base:
                text += f" <span class='muted'>({_num(row.get(base))})</span>"
            cells.append(f"<td>{text}</td>")
        cells.append(f"<td class='name muted'>{escape(row.get('note') or '')}</td>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    caption = ""
    if rows:
        caption = (f"<caption class='muted' style='caption-side: bottom; text-align: left'>region: "
                   f"{escape(str(rows[0].get('region', '')))} · threshold: {escape(str(rows[0].get('threshold', '')))}"
                   f" · ranked by: {escape(_importance_text(rows[0].get('importance')))}</caption>")
    return f"<table>{caption}{head}{''.join(body)}</table>"


def _importance_text(importance) -> str:
    from ..scoring.importance import IMPORTANCES, describe

    return describe(importance) if importance in IMPORTANCES else describe("relu")


def _rel(path, base: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()


def write_report(out_html, *, title="SaliencyInspector report", ct=None, case_info=None, predictions=(),
                 images=None, tables=None, class_segments=None, focus_classes=(), roc_images=(),
                 notes=(), methods=None,
                 slice_note="every method of a class is sliced at the same point", class_notes=None) -> Path:
    """Write the HTML report and return its path.

    ``ct``: the CT Volume (its geometry is shown); ``case_info``: extra key/values to show (e.g.
    the phantom's lesions); ``predictions``: list of dicts with ``class``, ``probability``, ``logit``
    and optionally ``truth`` (bool, or None when unknown); ``images``: {(method, class): PNG path};
    ``tables``: {(method, class): EvaluationTable or list of row dicts}; ``class_segments``: {class:
    segment names that hold that class's finding} (their rows are highlighted); ``focus_classes``:
    classes whose tables are shown open (the others are folded); ``roc_images``: list of (caption,
    PNG path); ``notes``: sentences shown at the end; ``slice_note``: how the pictures are sliced;
    ``class_notes``: {class: one line beside the class's pictures, e.g. where they are sliced}. A
    prediction dict with ``threshold`` gets the model's decision (present when p ≥ threshold) and
    one with ``validation_roc_auc`` the card's validation ROC AUC. Every picture must exist (ValueError if not),
    so the report never points at a missing file.
    """
    from ..scoring.metrics import METRICS, REFERENCE_KEYS
    from ..scoring.thresholds import TOPK_NOTE

    out_html = Path(out_html)
    base = out_html.parent
    base.mkdir(parents=True, exist_ok=True)
    images = dict(images or {})
    tables = dict(tables or {})
    class_segments = dict(class_segments or {})
    for path in list(images.values()) + [p for _, p in roc_images]:
        if not Path(path).is_file():
            raise ValueError(f"{path}: picture not found; render it before writing the report")
    if methods is None:
        methods = list(dict.fromkeys(m for m, _ in list(images) + list(tables)))
    classes = list(dict.fromkeys(c for _, c in list(images) + list(tables)))
    order = {c: i for i, c in enumerate(classes)}
    classes.sort(key=lambda c: (c not in focus_classes, order[c]))  # focus classes first

    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
             f"<style>{PAGE_STYLE}</style></head><body>",
             f"<h1>{escape(title)}</h1>",
             f"<p class='muted'>written {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by SaliencyInspector · "
             "maps are shown as ReLU(map)/max; metrics rank voxels by each method's declared importance "
             "(ReLU(map) for CAMs, |map| for gradient maps, the signed map for IG / input × gradient / occlusion; "
             "each table says which)</p>"]

    # CT
    parts.append("<h2>CT</h2><table>")
    if ct is not None:
        parts.append(f"<tr><th class='name'>grid</th><td class='name'>{escape(ct.describe_grid())}</td></tr>")
        direction = "identity (axis-aligned)" if np.allclose(ct.direction, np.eye(3)) \
            else escape(str([[round(v, 4) for v in r] for r in ct.direction.tolist()]))
        parts.append(f"<tr><th class='name'>direction</th><td class='name'>{direction}</td></tr>")
    for key, value in (case_info or {}).items():
        parts.append(f"<tr><th class='name'>{escape(str(key))}</th><td class='name'>{escape(str(value))}</td></tr>")
    parts.append("</table>")

    # predictions
    if predictions:
        has_truth = any(p.get("truth") is not None for p in predictions)
        has_decision = any("threshold" in p for p in predictions)
        has_val = any(p.get("validation_roc_auc") is not None for p in predictions)
        parts.append("<h2>Predictions</h2><table><tr><th class='name'>class</th><th>probability</th>"
                     "<th>logit</th>" + ("<th>threshold</th><th class='name'>model says</th>" if has_decision else "")
                     + ("<th>truly present</th>" if has_truth else "")
                     + ("<th title='from the model card: ROC AUC on validation cases'>validation ROC AUC</th>"
                        if has_val else "") + "</tr>")
        for p in predictions:
            truth = ""
            if has_truth:
                t = p.get("truth")
                truth = f"<td class='{'yes' if t else 'no'}'>{_num(t) if t is not None else 'unknown'}</td>"
            focus = " class='focus'" if p["class"] in focus_classes else ""
            decision = ""
            if has_decision:
                present = p.get("probability", 0) >= p.get("threshold", 0.5)
                decision = (f"<td>{_num(p.get('threshold'), 2)}</td><td class='name {'yes' if present else 'no'}'>"
                            f"{'present' if present else 'absent'}</td>")
            val = f"<td>{_num(p.get('validation_roc_auc'), 2)}</td>" if has_val else ""
            parts.append(f"<tr{focus}><td class='name'>{escape(p['class'])}</td><td>{_num(p.get('probability'))}"
                         f"</td><td>{_num(p.get('logit'))}</td>{decision}{truth}{val}</tr>")
        parts.append("</table>")

    # pictures: one row per class, one column per method
    if images:
        parts.append(f"<h2>Saliency maps</h2><p class='muted'>{escape(slice_note)} (radiological "
                     "orientation: patient right on image left; cyan + = each map's own peak) and a 3D view "
                     "from the front</p>")
        for c in classes:
            shown = [(m, images[(m, c)]) for m in methods if (m, c) in images]
            if not shown:
                continue
            note = (class_notes or {}).get(c)
            note = f" <span class='muted'>· {escape(note)}</span>" if note else ""
            parts.append(f"<h3>class {escape(c)}{note}</h3><div class='pictures' "
                         f"style='grid-template-columns: repeat({len(shown)}, 1fr)'>")
            for m, path in shown:
                parts.append(f"<figure><a href='{escape(_rel(path, base))}'><img src='{escape(_rel(path, base))}' "
                             f"alt='{escape(method_label(m))} map for class {escape(c)}'></a>"
                             f"<figcaption><b>{escape(method_label(m))}</b> · class {escape(c)}</figcaption></figure>")
            parts.append("</div>")

    # metrics
    if tables:
        parts.append("<h2>Agreement with the organs</h2><p class='muted'>one row per segment; highlighted: "
                     "the segments that hold the class's finding. Hover a column head for its meaning.</p>")
        for c in classes:
            for m in methods:
                if (m, c) not in tables:
                    continue
                block = _metrics_table_html(tables[(m, c)], focus=class_segments.get(c, ()))
                label = f"{escape(method_label(m))} · class {escape(c)}"
                opened = " open" if c in focus_classes else ""
                parts.append(f"<details{opened}><summary>{label}</summary>{block}</details>")

    if roc_images:
        parts.append("<h2>ROC curves</h2><div class='pictures' style='grid-template-columns: "
                     f"repeat({min(len(roc_images), 3)}, minmax(0, 460px))'>")
        for caption, path in roc_images:
            parts.append(f"<figure><img src='{escape(_rel(path, base))}' alt='{escape(caption)}'>"
                         f"<figcaption>{escape(caption)}</figcaption></figure>")
        parts.append("</div>")

    # legend from the registry
    parts.append("<h2>What the metrics mean</h2><table><tr><th class='name'>metric</th><th class='name'>"
                 "meaning</th><th>range</th><th class='name'>better</th></tr>")
    for key, info in METRICS.items():
        better = "reference level (not a score)" if key in REFERENCE_KEYS else \
            ("higher" if info.higher_is_better else "lower")
        unit = f" ({escape(info.unit)})" if info.unit else ""
        parts.append(f"<tr><td class='name'>{escape(info.name)}{unit} <span class='muted'>({escape(key)})</span></td>"
                     f"<td class='name'>{escape(info.meaning)}</td><td>{escape(info.range)}</td>"
                     f"<td class='name'>{better}</td></tr>")
    parts.append("</table>")
    rules = {str(r.get("threshold", "")) for t in tables.values() for r in _rows_of(t)}
    if "topk" in rules:
        parts.append(f"<p class='muted'>Note: {escape(TOPK_NOTE)}.</p>")
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>\n")
    out_html.write_text("\n".join(parts), encoding="utf-8")
    return out_html
