"""The trust card as an HTML page: the card table (from :data:`scoring.trust.CRITERIA`), the
randomization curves, a slice grid of the randomized maps (original → fully random), the
localization baselines and the gaze comparison. Pictures are PNGs beside the page."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from ..explainers.registry import method_label
from ..io.records import format_cell as _num
from .figures import PAGE_STYLE, pyplot, save_figure

if TYPE_CHECKING:
    from ..io.volume import Volume
    from ..scoring.trust import RandomizationCurve, TrustCard, Verdict

_VERDICT_STYLE = {"pass": "color:#0a7a2f;font-weight:bold", "fail": "color:#b00020;font-weight:bold",
                  "inconclusive": "color:#a15c00;font-weight:bold", "not measured": "color:#999"}


def _measurement(v: Verdict) -> str:
    """The statistic a verdict judged: Δ, its 95 % interval and n (HTML, escaped)."""
    if v.interval is None:
        return ""
    return (f"<br><span class='muted' title='{escape(v.statistic)}'>Δ {_num(v.estimate)} "
            f"[{_num(v.interval[0])}, {_num(v.interval[1])}] · n {v.n}</span>")


def plot_randomization(curves: Mapping[str, RandomizationCurve], verdicts: Mapping[str, Verdict],
                       out_png: str | Path) -> Path:
    """SSIM and Spearman to the original map per randomization step, one line per method, its
    baseline (from the method's randomization verdict) dashed in the same colour."""
    plt = pyplot()

    out_png = Path(out_png)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    longest = max(curves.values(), key=lambda c: len(c.blocks))
    for n, (method, curve) in enumerate(curves.items()):
        colour = f"C{n}"
        x = np.arange(len(curve.blocks))
        axes[0].plot(x, curve.ssim, "o-", color=colour, label=method_label(method))
        axes[1].plot(x, curve.spearman, "o-", color=colour, label=method_label(method))
        verdict = verdicts.get(method)
        if verdict is not None and verdict.baseline is not None:
            axes[0].axhline(verdict.baseline, color=colour, linestyle="--", linewidth=1)
            axes[1].axhline(verdict.details["spearman_baseline"], color=colour, linestyle="--", linewidth=1)
    for ax, what in zip(axes, ("SSIM", "Spearman")):
        ax.set_xticks(np.arange(len(longest.blocks)))
        ax.set_xticklabels(longest.blocks, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(f"{what} to the original map")
        ax.set_title(f"{what}: {longest.mode} randomization, output → input (dashed: baseline)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_png)


def plot_slice_grid(curves: Mapping[str, RandomizationCurve], out_png: str | Path,
                    normalisation: Mapping[str, str]) -> Path:
    """One row per method: the axial slice through the original map's peak at every step."""
    plt = pyplot()

    from ..scoring.similarity import normalise

    out_png = Path(out_png)
    rows = [(m, c) for m, c in curves.items() if c.maps]
    cols = max(len(c.maps) for _, c in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.5 * cols, 1.7 * len(rows) + 0.3), dpi=100, squeeze=False)
    for r, (method, curve) in enumerate(rows):
        norm = normalisation.get(method, curve.normalisation)
        first = normalise(curve.maps[0].array, norm)
        k = int(np.unravel_index(np.argmax(first), first.shape)[0])
        for c in range(cols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(curve.maps):
                ax.imshow(normalise(curve.maps[c].array, norm)[k], cmap="inferno", vmin=0, vmax=1)
                ax.set_title(curve.blocks[c], fontsize=6)
        axes[r, 0].text(-0.1, 0.5, method_label(method), transform=axes[r, 0].transAxes, rotation=90,
                        ha="right", va="center", fontsize=8)
    fig.suptitle("randomized maps, axial slice through the original map's peak (original → fully random)", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_png)


def write_trust_report(out_html: str | Path, card: TrustCard, ct: Volume | None = None) -> Path:
    """Write the trust card page and its pictures; returns the page's path."""
    from ..scoring.gaze import GAZE_INFO, GAZE_KEYS
    from ..scoring.trust import CRITERIA

    out_html = Path(out_html)
    base = out_html.parent
    base.mkdir(parents=True, exist_ok=True)
    ctx = card.context
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Trust card</title>"
             f"<style>{PAGE_STYLE}</style></head><body><h1>Can these maps be trusted?</h1>",
             f"<p class='muted'>class <b>{escape(str(ctx.get('class')))}</b> · models "
             f"{escape(', '.join(ctx.get('models', [])))} · CT {escape(str(ctx.get('ct', '')))}</p>"]

    # the card
    parts.append("<h2>Trust card</h2><table><tr><th class='name'>method</th>")
    for key, c in CRITERIA.items():
        parts.append(f"<th title='{escape(c.measures)}'>{escape(c.name)}<br><span class='muted'>value · baseline"
                     "<br>Δ [95 % interval] · n</span></th>")
    parts.append("</tr>")
    for method, row in card.rows.items():
        how = (ctx.get("importance") or {}).get(method)
        shown = f"<br><span class='muted'>by {escape(how['transform'])}</span>" if how else ""
        parts.append(f"<tr><td class='name'>{escape(method_label(method))}{shown}</td>")
        for key in CRITERIA:
            v = row[key]
            verdict = f"<span style='{_VERDICT_STYLE[v.verdict]}'>{v.verdict}</span>"
            text = verdict if v.verdict == "not measured" else \
                f"{_num(v.value)} · {_num(v.baseline)}{_measurement(v)}<br>{verdict}"
            note = f"<br><span class='muted'>{escape(v.note)}</span>" if v.note else ""
            parts.append(f"<td title='{escape(v.rule)}'>{text}{note}</td>")
        parts.append("</tr>")
    parts.append("</table><table><tr><th class='name'>criterion</th><th class='name'>measures</th>"
                 "<th class='name'>baseline</th><th class='name'>pass rule</th></tr>")
    for c in CRITERIA.values():
        parts.append(f"<tr><td class='name'>{escape(c.name)}</td><td class='name'>{escape(c.measures)}</td>"
                     f"<td class='name'>{escape(c.baseline)}</td><td class='name'>{escape(c.rule)}</td></tr>")
    parts.append(f"</table><p class='muted'>baseline cases: {escape(str(ctx.get('baseline', '')))}; maps compared on "
                 f"the model-input grid ({escape(str(ctx.get('comparison_grid', '')))}), each method's map by "
                 f"{escape(str(ctx.get('importance_source', 'its importance')))}: "
                 + "; ".join(f"{escape(method_label(m))}: {escape(h['transform'])}, for SSIM {escape(h['for_ssim'])}"
                             for m, h in (ctx.get("importance") or {}).items()) + ".</p>"
                 f"<p class='muted'>Similarities are taken {escape(str(ctx.get('similarity_region', '')))}. "
                 "Δ is the statistic each verdict judges (hover for its definition), with its 95 % interval: "
                 f"{escape(str(ctx.get('uncertainty', 'bootstrap over cases')))}. PASS or FAIL only when the "
                 "interval lies wholly on one side of the line; INCONCLUSIVE when it straddles it.</p>")

    # randomization
    if card.curves:
        verdicts = {m: row["randomization"] for m, row in card.rows.items()}
        curves_png = plot_randomization(card.curves, verdicts, base / "trust_randomization.png")
        grid_png = plot_slice_grid(card.curves, base / "trust_randomized_maps.png", ctx.get("normalisation", {}))
        parts.append("<h2>Randomization</h2>"
                     f"<figure><img src='{curves_png.name}' alt='randomization curves'></figure>"
                     f"<figure><img src='{grid_png.name}' alt='randomized maps'></figure>")
        parts.append("<table><tr><th class='name'>method</th><th class='name'>block randomized</th><th>SSIM</th>"
                     "<th>Spearman</th></tr>")
        for m, curve in card.curves.items():
            for b, s, r in zip(curve.blocks, curve.ssim, curve.spearman):
                parts.append(f"<tr><td class='name'>{escape(method_label(m))}</td><td class='name'>{escape(b)}</td>"
                             f"<td>{_num(s)}</td><td>{_num(r)}</td></tr>")
        parts.append("</table>")

    # localization
    loc_rows = [(m, row["localization"]) for m, row in card.rows.items() if row["localization"].verdict != "not measured"]
    if loc_rows:
        parts.append("<h2>Localization against baselines</h2><table><tr><th class='name'>method</th>"
                     "<th class='name'>map / baseline</th><th>average precision</th><th>trapezoid AUPRC</th></tr>")
        for m, v in loc_rows:
            for who in ("map", "uniform", "ct_intensity", "location_prior"):
                if who in v.details:
                    d = v.details[who]
                    parts.append(f"<tr><td class='name'>{escape(method_label(m))}</td><td class='name'>{who}</td>"
                                 f"<td>{_num(d['average_precision'])}</td><td>{_num(d['trapezoid'])}</td></tr>")
        parts.append("</table><p class='muted'>the trapezoid area (the reference code's) gives a constant map "
                     "(1 + prevalence) / 2; average precision gives it the prevalence</p>")

    # gaze
    gaze_rows = [(m, row["gaze"]) for m, row in card.rows.items() if row["gaze"].verdict != "not measured"]
    if gaze_rows:
        parts.append("<h2>Agreement with readers' gaze</h2><table><tr><th class='name'>method</th>"
                     + "".join(f"<th title='{escape(GAZE_INFO[k])}'>{k.upper()}</th>" for k in GAZE_KEYS) + "</tr>")
        for m, v in gaze_rows:
            d = v.details
            cells = []
            for k in GAZE_KEYS:
                ci = d["intervals"].get(k)
                cells.append(f"<td>{_num(d['metrics'][k])}" + (f"<br><span class='muted'>[{_num(ci[0])}, {_num(ci[1])}]</span>"
                                                               if ci else "") + "</td>")
            parts.append(f"<tr><td class='name'>{escape(method_label(m))}</td>{''.join(cells)}</tr>")
        inter = gaze_rows[0][1].details.get("inter_observer")
        if inter:
            ci = gaze_rows[0][1].details["inter_observer_intervals"]
            parts.append("<tr><td class='name'>inter-observer (leave one reader out)</td>" + "".join(
                f"<td>{_num(inter[k])}<br><span class='muted'>[{_num(ci[k][0])}, {_num(ci[k][1])}]</span></td>"
                for k in GAZE_KEYS) + "</tr>")
        parts.append("</table>")
        d = gaze_rows[0][1].details
        parts.append(f"<p class='muted'>{d['n_fixations']} fixations, readers {escape(', '.join(map(str, d['readers'])))}; "
                     f"σ = {d['sigma_mm']:g} mm; centre bias: {escape(d['centre_bias'])}; grid: {escape(d['grid'])}</p>")

    if card.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in card.notes) + "</ul>")
    parts.append("</body></html>\n")
    out_html.write_text("\n".join(parts), encoding="utf-8")
    return out_html
