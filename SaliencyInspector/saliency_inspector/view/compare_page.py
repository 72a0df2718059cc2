"""The estimator-comparison page: a slice grid (one row per estimator through the mask), the
deletion/LIF curves of every estimator in one plot with the random maps' mean and 95 % band, and
the table (with the importance transform each method was ranked by, and F − F(random) with its
interval) beside the rankings per measure. One case gives no test between methods; the page says so."""

from __future__ import annotations

from html import escape
from pathlib import Path

import numpy as np

from ..explainers.registry import method_label
from ..io.records import format_cell, is_missing
from ..scoring.importance import describe
from .figures import PAGE_STYLE, pyplot, save_figure


def plot_slice_grid(ct, maps: dict, mask, out_png) -> Path:
    """One row per map, columns axial / coronal / sagittal through the mask's centroid (voxel space),
    the CT in grey, ReLU(map)/max in colour and the mask outlined."""
    plt = pyplot()
    mask = np.asarray(mask, bool)
    k, j, i = (int(round(c)) for c in np.argwhere(mask).mean(0)) if mask.any() else \
        (s // 2 for s in ct.shape)
    sz, sy, sx = ct.spacing[2], ct.spacing[1], ct.spacing[0]
    cuts = [("axial", lambda a: a[k], sy / sx), ("coronal", lambda a: a[:, j, :][::-1], sz / sx),
            ("sagittal", lambda a: a[:, :, i][::-1], sz / sy)]
    fig, axes = plt.subplots(len(maps), 3, figsize=(9, 2.9 * len(maps)), dpi=90, squeeze=False)
    hu = np.clip((ct.array.astype(np.float32) + 1000) / 1400, 0, 1)
    for row, (method, volume) in enumerate(maps.items()):
        positive = np.maximum(volume.array, 0)
        top = float(positive.max()) or 1.0
        for col, (name, cut, aspect) in enumerate(cuts):
            ax = axes[row, col]
            ax.imshow(cut(hu), cmap="gray", aspect=aspect, vmin=0, vmax=1)
            shown = cut(positive) / top
            ax.imshow(np.ma.masked_less(shown, 0.05), cmap="inferno", alpha=0.65, aspect=aspect, vmin=0, vmax=1)
            ax.contour(cut(mask.astype(float)), levels=[0.5], colors="#2ecc40", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
            if col == 0:
                ax.set_ylabel(method_label(method), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_png)


def plot_fidelity_curves(curves: dict, out_png, title="") -> Path:
    """Deletion (MIF) and LIF probability curves of every estimator, one panel each, with the random
    map's curves as the chance line."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.8), dpi=100)
    first = next(iter(curves.values())) if curves else None
    chance = first.random if first is not None else None
    for method, result in curves.items():
        c = result.curves
        name = method_label(method)
        left.plot(c.fractions * 100, c.mif_probability, linewidth=1.5, label=f"{name} (AUC {c.auc_mif:.3f})")
        right.plot(c.fractions * 100, c.lif_probability, linewidth=1.5, label=f"{name} (AUC {c.auc_lif:.3f})")
    if chance is not None:
        n = first.chance.n
        for ax, key, auc_value in ((left, "mif_probability", chance.auc_mif), (right, "lif_probability", chance.auc_lif)):
            runs = np.array([getattr(r, key) for r in first.chance.runs])
            ax.fill_between(chance.fractions * 100, np.percentile(runs, 2.5, axis=0), np.percentile(runs, 97.5, axis=0),
                            color="0.6", alpha=0.3, linewidth=0, label=f"random maps, 95 % band (n={n})")
            ax.plot(chance.fractions * 100, getattr(chance, key), "k--", linewidth=1,
                    label=f"random maps, mean (AUC {auc_value:.3f})")
    for ax, name in ((left, "deletion, most important first (MIF): lower is better"),
                     (right, "least important first (LIF): higher is better")):
        ax.set_xlabel("voxels replaced (%)")
        ax.set_ylabel("class probability")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out_png)


def _cell(value, digits=3):
    return format_cell(value, digits) if is_missing(value) or isinstance(value, float) else escape(str(value))


def write_compare_report(comparison, ct, mask, out_dir) -> Path:
    """Write ``compare.html`` (+ ``images/compare_slices.png``, ``images/compare_fidelity.png``) into
    ``out_dir`` for a :class:`saliency_inspector.workflows.compare.Comparison`; returns the page's path."""
    out_dir = Path(out_dir)
    images = out_dir / "images"
    slices = plot_slice_grid(ct, comparison.maps, mask, images / "compare_slices.png")
    curves = plot_fidelity_curves(comparison.curves, images / "compare_fidelity.png",
                                  title=f"class {comparison.class_name}")
    measures = comparison.measures  # key -> (title, higher is better)
    rankings = comparison.rankings
    head = "".join(f"<th>{escape(title)}</th>" for title, _ in measures.values())
    rows = []
    for r in comparison.rows:
        cells = []
        for key in measures:
            text = _cell(r.get(key))
            if key == "best_dice" and r.get("best_dice_k") is not None:
                text += f" <span class='muted'>@{r['best_dice_k']}%</span>"
            if key == "fidelity_F":
                text += f" <span class='muted'>(random {_cell(r.get('fidelity_F_random'))})</span>"
            if key == "fidelity_F_minus_random":
                text += (f" <span class='muted'>[{_cell(r.get('fidelity_F_minus_random_low'))}, "
                         f"{_cell(r.get('fidelity_F_minus_random_high'))}] {escape(str(r.get('fidelity_F_verdict')))}"
                         "</span>")
            if key == "auprc":
                text += f" <span class='muted'>(chance {_cell(r.get('auprc_chance'))})</span>"
            cells.append(f"<td>{text} <b>#{rankings[key].index(r['method']) + 1}</b></td>")
        rows.append(f"<tr><td class='name'>{escape(method_label(r['method']))}</td>"
                    f"<td class='name'>{escape(r['family'])}</td>"
                    f"<td class='name'>{escape(describe(r['importance']))}</td>"
                    + "".join(cells) + "</tr>")
    table = (f"<table><tr><th class='name'>estimator</th><th class='name'>family</th><th class='name'>ranked by</th>"
             f"{head}</tr>{''.join(rows)}</table>")
    rank_rows = "".join("<tr><td>" + str(n + 1) + "</td>" + "".join(
        f"<td class='name'>{escape(method_label(rankings[k][n]))}</td>" for k in measures) + "</tr>"
        for n in range(len(comparison.rows)))
    ranking = f"<table><tr><th>rank</th>{head}</tr>{rank_rows}</table>"
    page = out_dir / "compare.html"
    page.write_text(
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Estimators compared</title>"
        f"<style>{PAGE_STYLE}</style></head><body><h1>Estimators compared · class {escape(comparison.class_name)}</h1>"
        f"<p class='muted'>scored against segment {escape(comparison.segment)} over the body; fidelity on the "
        f"model-input grid ({escape(str(comparison.info.get('fidelity_replacement')))}, "
        f"{comparison.info.get('fidelity_steps')} steps); p(class) = {_cell(comparison.info.get('probability'))}. "
        "Model-centric (fidelity) and mask-centric (ROC, Dice) rankings side by side. Each method's voxels are "
        "ranked by its declared importance (column 'ranked by') for every measure. Fidelity's chance line: "
        f"{comparison.info.get('random_maps')} random maps; F − F(random) with the random maps' 95 % band as its "
        f"interval.</p><p><b>Note:</b> {escape(str(comparison.info.get('note', '')))}.</p>"
        "<h2>Table</h2><div class='pictures' style='grid-template-columns: 3fr 2fr'>"
        f"<div>{table}</div><div>{ranking}</div></div>"
        f"<h2>Deletion and insertion curves</h2><figure><img src='images/{curves.name}' alt='fidelity curves'></figure>"
        f"<h2>Slices through the mask</h2><figure><img src='images/{slices.name}' alt='slice grid'></figure>"
        "</body></html>\n", encoding="utf-8")
    return page
