"""Pictures of a saliency map over its CT: three orthogonal slices through the map's peak
(:mod:`.slices`) and a 3D view (:mod:`.render3d`), composed into one PNG with a title, orientation
letters, a colour bar and a legend of the segments' colours.

Display map = ReLU(raw map) / max (:mod:`.display`), shown as heat colours that are transparent
below a threshold, over the CT in a window, with organ outlines in the segments' own colours.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.volume import Volume
from .display import (DEFAULT_THRESHOLD, DEFAULT_WINDOW, cool_colors, heat_colors, peak_point, segment_colors,
                      segment_groups)
from .render3d import render_3d
from .slices import slice_panels


@dataclass
class Overlay:
    """A composed picture: ``image`` (H, W, 3 uint8) and where each panel sits in it."""

    image: np.ndarray
    panels: dict  # name -> SlicePanel
    offsets: dict  # name -> (row0, col0) of the panel's top-left pixel in ``image``
    peak_lps: np.ndarray
    notes: list
    legend_lines: int = 1
    axes3d: dict = None  # letter -> (drow, dcol) screen direction of R, A, S in the 3D view

    def project(self, panel: str, lps) -> tuple:
        """(row, col) in ``image`` (and in the written PNG) of an LPS point on panel ``panel``."""
        row, col = self.panels[panel].project(lps)
        r0, c0 = self.offsets[panel]
        return row + r0, col + c0


HEADER_PX = 66  # title, subtitle, colour bar: three lines
BANNER_PX = 26  # a warning line above the title (e.g. a class the model calls absent, magnified)
BANNER_COLOR = (0.85, 0.0, 0.85)  # magenta: not a heat colour
FOOTER_PX = 24  # per legend line
_LEGEND_CHAR_PX = 8.0  # approximate width of one character of the 10 pt legend at 100 dpi


def _bar_width(width: int, signed: bool) -> int:
    """Width of the colour bar(s) in the header: narrower when the negative scale sits beside it."""
    return min(110, width // 7) if signed else min(160, width // 4)


def _legend_layout(segments, width: int) -> list:
    """(x, line, segment) for every segment name in the legend, wrapped to the picture's width."""
    out, x, line = [], 6.0, 0
    for group in segment_groups(segments):
        for segment in group:
            label_px = _LEGEND_CHAR_PX * (len(segment.name) + 2) + 12
            if x + label_px > width and x > 6.0:
                x, line = 6.0, line + 1
            out.append((x, line, segment))
            x += label_px
    return out


def compose_overlay(ct: Volume, saliency: Volume, segments=None, point=None, window=DEFAULT_WINDOW,
                    threshold: float = DEFAULT_THRESHOLD, panel_px: int = 384,
                    with_3d: bool = True, scale=None, signed: bool = False, banner: str | None = None) -> Overlay:
    """The picture as an array: a 2×2 grid (axial | coronal / sagittal | 3D) below a header strip.

    Text (title, orientation letters, legend) is added when the PNG is written, so pixels away from
    text are exactly these.
    """
    notes = []
    if peak_point(saliency) is None:
        notes.append("the map has no positive values (nothing to show); slices through the CT's centre")
    panels = {p.name: p for p in slice_panels(ct, saliency, segments, point, window, threshold, panel_px, scale,
                                              signed)}
    axes3d = {}
    cell_h = max(p.rgb.shape[0] for p in panels.values())
    cell_w = max(p.rgb.shape[1] for p in panels.values())
    gap = 4
    width = 2 * cell_w + gap
    legend = _legend_layout(segments, width)
    legend_lines = (legend[-1][1] + 1) if legend else 1
    top_px = HEADER_PX + (BANNER_PX if banner else 0)
    height = top_px + 2 * cell_h + gap + FOOTER_PX * legend_lines
    image = np.zeros((height, width, 3))
    image[:] = 0.0
    if banner:
        image[:BANNER_PX - 4] = BANNER_COLOR
    cells = {"axial": (0, 0), "coronal": (0, 1), "sagittal": (1, 0), "3d": (1, 1)}
    offsets = {}
    for name, (r, c) in cells.items():
        top = top_px + r * (cell_h + gap)
        left = c * (cell_w + gap)
        if name == "3d":
            if with_3d:
                image[top:top + cell_h, left:left + cell_w] = render_3d(
                    saliency, segments, size=(cell_h, cell_w), threshold=threshold, scale=scale,
                    axes_out=axes3d) / 255.0
            offsets[name] = (top, left)
            continue
        panel = panels[name]
        h, w = panel.rgb.shape[:2]
        r0, c0 = top + (cell_h - h) // 2, left + (cell_w - w) // 2
        image[r0:r0 + h, c0:c0 + w] = panel.rgb
        offsets[name] = (r0, c0)
    # colour bar of the heat scale in the header's right part
    bar_w = _bar_width(width, signed)
    t = np.linspace(0, 1, bar_w)
    bar = heat_colors(t)[:, :3]
    y0 = top_px - HEADER_PX
    image[y0 + 50:y0 + 62, width - bar_w - 40:width - 40] = bar[None]
    if signed:  # negative evidence: the blue scale left of the heat scale, from -1 (left) to -threshold
        image[y0 + 50:y0 + 62, width - 2 * bar_w - 130:width - bar_w - 130] = cool_colors(t[::-1])[None]
    used = peak_point(saliency)
    return Overlay((np.clip(image, 0, 1) * 255).round().astype(np.uint8), panels, offsets,
                   used if used is not None else np.asarray(panels["axial"].point), notes, legend_lines, axes3d)


def render_overlay(ct: Volume, saliency: Volume, segments, out_png, title=None, *, point=None,
                   window=DEFAULT_WINDOW, threshold: float = DEFAULT_THRESHOLD, panel_px: int = 384,
                   with_3d: bool = True, scale=None, point_label=None, signed: bool = False,
                   banner: str | None = None) -> Path:
    """Write a PNG: axial/coronal/sagittal slices through ``point`` (default: the map's peak) and a 3D view.

    ``ct`` and ``saliency`` are Volumes (any grids that overlap in physical space; oblique ones
    too); ``segments`` is None, a Segments or a list of them (outlined in 2D, surfaces in 3D).
    The heat shows ReLU(map)/max (or /``scale``, a scale shared by several maps), transparent below
    ``threshold``; with ``signed`` (the method's map is signed) negative evidence is shown in blue
    on the same scale (|map|/max |map|). A cyan cross marks the map's peak on the slices through
    it. ``point_label`` says in the subtitle what ``point`` is (e.g. "the lesion's centre");
    ``banner`` is a warning printed above the title on a magenta strip (e.g. a class the model
    calls absent, whose map is magnified). Returns the PNG's path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib import patheffects

    out_png = Path(out_png)
    if out_png.suffix.lower() != ".png":
        raise InputError(f"{out_png}: pictures are written as PNG; give a file name ending in .png")
    overlay = compose_overlay(ct, saliency, segments, point, window, threshold, panel_px, with_3d, scale,
                              signed, banner)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    height, width = overlay.image.shape[:2]
    dpi = 100
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(overlay.image, interpolation="nearest", aspect="equal")
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.axis("off")
    # every label drawn over pixels gets a black outline, so it stays readable over bone or heat
    halo = [patheffects.withStroke(linewidth=3, foreground="black")]
    text = dict(color="white", fontsize=11, family="DejaVu Sans", path_effects=halo)
    y0 = BANNER_PX if banner else 0
    if banner:
        ax.text(6, (BANNER_PX - 4) / 2, banner, fontsize=11, weight="bold", color="white", va="center")
    at = overlay.panels["axial"].point
    where = point_label or ("the map's peak" if np.allclose(at, overlay.peak_lps) else "the given point")
    head = title or "saliency overlay"
    ax.text(6, y0 + 12, head, fontsize=12, weight="bold", color="white", va="center")
    scale_text = f"{'|map|' if signed else 'ReLU(map)'}/{scale:.3g}" if scale is not None else \
        ("map/max |map|" if signed else "ReLU(map)/max")
    sub = f"slices through LPS ({at[0]:.1f}, {at[1]:.1f}, {at[2]:.1f}) mm ({where}) · cyan + = peak"
    if overlay.notes:
        sub = overlay.notes[0]
    ax.text(6, y0 + 33, sub, va="center", **{**text, "fontsize": 9.5})
    bar_w = _bar_width(width, signed)
    heat = f"heat: {scale_text} (transparent below {threshold:g})"
    if signed:
        heat = f"{scale_text}: for the class red-yellow, against it blue"
    ax.text(6, y0 + 56, heat, va="center", **{**text, "fontsize": 9.5})
    ax.text(width - bar_w - 44, y0 + 56, f"{threshold:g}", ha="right", va="center", **text)
    ax.text(width - 36, y0 + 56, "1", ha="left", va="center", **text)
    if signed:
        ax.text(width - 2 * bar_w - 134, y0 + 56, "−1", ha="right", va="center", **text)
        ax.text(width - bar_w - 126, y0 + 56, f"−{threshold:g}", ha="left", va="center", **text)
    for name, panel in overlay.panels.items():
        r0, c0 = overlay.offsets[name]
        h, w = panel.rgb.shape[:2]
        left, right, top, bottom = panel.letters
        letter = dict(text, fontsize=13, weight="bold", path_effects=[patheffects.withStroke(linewidth=4,
                                                                                           foreground="black")])
        ax.text(c0 + w - 4, r0 + 12, name, va="center", ha="right", **text)
        ax.text(c0 + 4, r0 + h / 2, left, va="center", **letter)
        ax.text(c0 + w - 4, r0 + h / 2, right, va="center", ha="right", **letter)
        ax.text(c0 + w / 2, r0 + 12, top, ha="center", va="center", **letter)
        ax.text(c0 + w / 2, r0 + h - 12, bottom, ha="center", va="center", **letter)
    if with_3d:
        r0, c0 = overlay.offsets["3d"]
        cell_h = max(p.rgb.shape[0] for p in overlay.panels.values())
        ax.text(c0 + 4, r0 + 12, "3D (from the front" + ("; evidence for the class only)" if signed else ")"),
                va="center", **text)
        # orientation marker: arrows towards the patient's Right, Anterior and Superior
        base = np.array([r0 + cell_h - 34.0, c0 + 34.0])
        for letter_name, (dr, dc) in (overlay.axes3d or {}).items():
            tip = base + 22 * np.array([dr, dc])
            ax.annotate("", xy=(tip[1], tip[0]), xytext=(base[1], base[0]),
                        arrowprops=dict(arrowstyle="->", color="white", lw=1.5))
            ax.text(tip[1] + 8 * dc, tip[0] + 8 * dr, letter_name, ha="center", va="center",
                    **dict(text, fontsize=11, weight="bold"))
    # legend: segment names in their colours, wrapped onto as many lines as compose_overlay made room for
    colors = segment_colors(segments)
    for x, line, segment in _legend_layout(segments, width):
        ax.text(x, height - FOOTER_PX * (overlay.legend_lines - line) + FOOTER_PX / 2,
                f"■ {segment.name}", color=colors[segment.name][:3], fontsize=10, va="center")
    fig.savefig(out_png, dpi=dpi, facecolor="black")
    plt.close(fig)
    return out_png
