"""The self-explaining comparison's page (``self-explaining.html``): the table (mean [95 % interval]
per model, map and measure, with the paired p against the model's own map), the randomization
verdicts, the conventions and conditions, and one figure per model: an axial slice of one case
through its lesion, the CT with each method's map (ReLU, each map scaled to its own maximum) and the
lesion outlined (:func:`view.slices.slice_panels`, the product's overlay)."""

from __future__ import annotations

from html import escape
from pathlib import Path

import numpy as np

from ..explainers.registry import method_label
from ..io.files import written_atomically
from ..io.names import safe_name
from .figures import PAGE_STYLE, pyplot, save_figure

_VERDICT_STYLE = {"pass": "color:#0a7a2f;font-weight:bold", "fail": "color:#b00020;font-weight:bold",
                  "inconclusive": "color:#a15c00;font-weight:bold"}


def plot_case_axial(ct, lesions, maps: dict, lesion, out_png, title="") -> Path:
    """One row: the CT with the lesions outlined, then each map of ``maps`` (method → Volume on the
    CT grid) over it, all the axial slice through the centre of ``lesion`` (bool array on the CT
    grid; the CT's centre when empty)."""
    from .slices import slice_panels

    plt = pyplot()
    lesion = np.asarray(lesion, bool)
    centre = np.argwhere(lesion).mean(0)[::-1] if lesion.any() else (np.asarray(ct.size_xyz) - 1) / 2.0
    point = ct.index_to_physical(centre)
    blank = ct.with_array(np.zeros(ct.shape, np.float32))
    panels = [("CT, lesions outlined", blank)] + [(method_label(m), v) for m, v in maps.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.8 * len(panels), 3.1), dpi=100, squeeze=False)
    for ax, (name, volume) in zip(axes[0], panels):
        axial = slice_panels(ct, volume, segments=lesions, point=point, panel_px=256)[0]
        ax.imshow(axial.rgb)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_png)


def _num(value, digits=3) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _cell(entry, n_cases) -> str:
    if entry is None:
        return "<td></td>"
    if not np.isfinite(entry["mean"]):
        return "<td class='muted'>undefined</td>"
    text = f"{_num(entry['mean'])}<br><span class='muted'>[{_num(entry['ci'][0])}, {_num(entry['ci'][1])}]"
    if entry["n"] < n_cases:
        text += f" n={entry['n']}"
    test = entry.get("vs_reference")
    if test is not None and test.get("p_holm") is not None and np.isfinite(test["p_holm"]):
        text += f"<br>p={test['p_holm']:.2g}"
    return f"<td>{text}</span></td>"


def _verdict(v) -> str:
    style = _VERDICT_STYLE.get(v["verdict"], "")
    return f"<span style='{style}'>{escape(v['verdict'].upper())}</span>"


def write_self_explaining_page(out_html, result: dict, figures: dict | None = None) -> Path:
    """Write the page for ``result`` (``workflows.self_explaining.compare_self_explaining`` plus its
    ``metrics`` and ``conventions``) and one figure per model of ``figures`` (model → {"ct",
    "lesions", "maps", "lesion", "case", "class"}) under ``images/`` beside it; returns the page."""
    out_html = Path(out_html)
    base = out_html.parent
    summary, randomization = result["summary"], result.get("randomization", [])
    conditions = result.get("conditions", {})
    labels = {m["key"]: m["label"] for m in result["metrics"]}
    n_cases = int(conditions.get("n_cases") or 0)
    gateless = set(conditions.get("models_without_gates") or [])

    head = "".join(f"<th>{escape(label)}</th>" for label in labels.values())
    rows = []
    for model in dict.fromkeys(e["model"] for e in summary):
        if model in gateless:
            rows.append(f"<tr><td class='name'>{escape(model)}</td><td class='name'>attention</td>"
                        f"<td class='name muted' colspan='{len(labels) + 1}'>no attention gates: no own map</td></tr>")
        for method in dict.fromkeys(e["method"] for e in summary if e["model"] == model):
            cells = "".join(_cell(next((e for e in summary if e["model"] == model and e["method"] == method
                                        and e["metric"] == k), None), n_cases) for k in labels)
            v = next((v for v in randomization if v["model"] == model and v["method"] == method), None)
            rand = "<td></td>" if v is None else (
                f"<td>{_num(v['estimate'], 3)}<br><span class='muted'>[{_num(v['interval'][0])}, "
                f"{_num(v['interval'][1])}]</span><br>{_verdict(v)}</td>")
            name = escape("readers (inter-observer)" if method == "readers" else method_label(method))
            reference = next((e["vs_reference"]["reference"] for e in summary if e["model"] == model
                              and e["method"] == method and "vs_reference" in e), None)
            if reference:
                name += f"<br><span class='muted'>p vs {escape(method_label(reference))}</span>"
            rows.append(f"<tr><td class='name'>{escape(model)}</td><td class='name'>{name}</td>{cells}{rand}</tr>")
    table = (f"<table><tr><th class='name'>model</th><th class='name'>map</th>{head}<th>randomization<br>"
             f"<span class='muted'>Δ SSIM [95 %]</span></th></tr>{''.join(rows)}</table>")

    rand_rows = "".join(
        f"<tr><td class='name'>{escape(v['model'])}</td><td class='name'>{escape(method_label(v['method']))}</td>"
        f"<td>{v['n_cases']}</td><td>{v['n_pairs']}</td><td>{_num(v['ssim_mean'])}</td><td>{_num(v['baseline_ssim'])}"
        f"</td><td>{_num(v['estimate'])} [{_num(v['interval'][0])}, {_num(v['interval'][1])}]</td><td>{_verdict(v)}</td>"
        f"<td class='name muted'>{escape(v['note'])}</td></tr>" for v in randomization)
    rand_table = ("<table><tr><th class='name'>model</th><th class='name'>map</th><th>cases</th><th>baseline pairs</th>"
                  "<th>SSIM trained vs randomized</th><th>baseline SSIM</th><th>Δ [95 %]</th><th>verdict</th>"
                  f"<th class='name'>note</th></tr>{rand_rows}</table>")
    rule = escape(randomization[0]["statistic"] + "; " + randomization[0]["rule"]) if randomization else ""

    shown = ("n_cases", "phantom_size_xyz", "seeds_from", "lesion_sets", "readers", "fixations_per_reader",
             "reader_density", "fidelity_steps", "fidelity_replacement", "fidelity_chance", "map", "region",
             "ioa_threshold", "randomization", "interval", "test")
    cond_rows = "".join(f"<tr><td class='name'>{escape(k)}</td><td class='name'>{escape(str(conditions[k]))}</td></tr>"
                        for k in shown if k in conditions)
    timing_rows = "".join(f"<tr><td class='name'>{escape(m)}</td><td>{_num(t['seconds_per_case'], 1)}</td>"
                          f"<td>{_num(t['seconds_total'], 0)}</td></tr>" for m, t in result.get("timings", {}).items())

    pictures = []
    for model, fig in (figures or {}).items():
        png = plot_case_axial(fig["ct"], fig["lesions"], fig["maps"], fig["lesion"],
                              base / "images" / f"self_explaining_{safe_name(model)}.png",
                              title=f"{model}: case {fig['case']}, class {fig['class']}")
        pictures.append(f"<figure><img src='images/{png.name}' alt='{escape(model)}'><figcaption>{escape(model)}: "
                        f"case {fig['case']}, class {escape(str(fig['class']))}, axial slice through the lesion's "
                        "centre; ReLU(map) scaled to each map's own maximum; lesions outlined</figcaption></figure>")

    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Self-explaining vs post-hoc maps"
            f"</title><style>{PAGE_STYLE}</style></head><body><h1>The models' own maps beside HiResCAM and Grad-CAM</h1>"
            f"<p class='muted'>{n_cases} unseen phantoms with known organs and lesions; synthetic readers look at the "
            "lesions. One claim per cell: its mean over cases with a 95 % interval; a difference between two maps "
            "holds only where its paired p is small.</p>"
            f"<h2>Table</h2>{table}<ul>" + "".join(f"<li class='muted'>{escape(line)}</li>"
                                                  for line in result.get("conventions", [])) + "</ul>"
            f"<h2>Randomization</h2><p class='muted'>{rule}</p>{rand_table}"
            "<h2>One case per model</h2><div class='pictures'>" + "".join(pictures) + "</div>"
            f"<h2>Conditions</h2><table>{cond_rows}</table>"
            "<h2>Time</h2><table><tr><th class='name'>model</th><th>seconds per case</th><th>seconds in all</th></tr>"
            f"{timing_rows}</table></body></html>\n")
    base.mkdir(parents=True, exist_ok=True)
    with written_atomically(out_html) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out_html
