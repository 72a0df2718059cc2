"""What every picture and page of view/ shares: matplotlib off-screen, saving a figure, the page style."""

from __future__ import annotations

from pathlib import Path

# The CSS of every HTML page (report, compare, trust card, cohort), so they read as one product.
PAGE_STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px; color: #1d1d1f;
       background: #fafafa; max-width: 1700px; }
h1 { margin-bottom: 4px; } h2 { margin-top: 32px; border-bottom: 1px solid #ccc; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0 16px 0; font-size: 13px; background: white; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #eee; } td.name, th.name { text-align: left; }
tr.focus td { font-weight: bold; background: #fff4d6; }
.muted { color: #666; font-size: 12px; }
.pictures { display: grid; gap: 12px; align-items: start; }
figure { margin: 0; background: white; border: 1px solid #ddd; padding: 6px; }
figure img { width: 100%; height: auto; display: block; }
figcaption { font-size: 13px; margin-top: 4px; }
.yes { color: #0a7a2f; font-weight: bold; } .no { color: #999; }
details { margin: 6px 0; } summary { cursor: pointer; font-weight: 600; }
"""


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed; imported on first use only)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_png, **savefig_options) -> Path:
    """Write ``fig`` to ``out_png`` (folders made as needed), close it, return the path."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, **savefig_options)
    pyplot().close(fig)
    return out_png
