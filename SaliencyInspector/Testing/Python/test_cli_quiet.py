"""Issue 23 leftovers: no library warning reaches a CLI user's terminal, the filters are exactly the
named ones and only at the CLI's entry; phantom and train-demo say what they do at least every ~10 s."""

import os
import subprocess
import sys
import time
import warnings

import pytest

from saliency_inspector import cli

CLI = "import sys; from saliency_inspector.cli import main; sys.argv[0] = 'saliency-inspector'; sys.exit(main())"


def test_only_the_named_warnings_from_their_module_are_filtered():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cli.quiet_known_warnings()
        message = "Input Tensor 0 did not already require gradients, required_grads has been set automatically."
        # the same text from another module, another category, another message: all still shown
        warnings.warn(message, UserWarning)
        warnings.warn(message, RuntimeWarning)
        warnings.warn("something else", UserWarning)
        # from Captum's module: filtered
        warnings.warn_explicit(message, UserWarning, "saliency.py", 129, module="captum.attr._core.saliency")
    assert [str(w.message)[:14] for w in seen] == ["Input Tensor 0", "Input Tensor 0", "something else"]


def test_importing_the_library_installs_no_filter():
    """The filters live in cli.py only: importing the package (as a Python user or Slicer does)
    leaves Captum's warning visible, and no other module of the package calls filterwarnings."""
    from pathlib import Path

    code = ("import warnings; import saliency_inspector as si; "
            "import saliency_inspector.workflows.trust, saliency_inspector.explainers.explanation; "
            "print(any('require gradients' in str(getattr(f[1], 'pattern', '')) for f in warnings.filters))")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert got.stdout.strip() == "False", got.stderr
    package = Path(cli.__file__).parent
    callers = [p.relative_to(package).as_posix() for p in package.rglob("*.py")
               if "filterwarnings(" in p.read_text() or "simplefilter(" in p.read_text()]
    assert callers == ["cli.py"]


@pytest.mark.slow
def test_explain_with_captum_methods_prints_no_warning(tmp_path):
    """``explain --method gradient`` (Captum's Saliency: its "did not already require gradients"
    UserWarning) and ``--method ig`` in a subprocess: stderr has progress lines, no "Warning"."""
    import saliency_inspector as si

    si.write_volume(si.make_phantom(seed=1, size=(32, 32, 20)).ct, tmp_path / "ct.nrrd")
    p = subprocess.run([sys.executable, "-c", CLI, "explain", str(tmp_path / "ct.nrrd"), "--model", "demo",
                        "--method", "gradient", "--method", "ig", "--steps", "4", "--class", "liver", "--out",
                        str(tmp_path / "maps")], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "[saliency-inspector]" in p.stderr
    assert "Warning" not in p.stderr and "warn(" not in p.stderr, p.stderr


@pytest.mark.slow
def test_phantom_says_what_it_does_at_least_every_ten_seconds(tmp_path):
    """A full-size phantom (512×512×120, ~1 min on 2 cores): no gap between stderr lines over 10 s."""
    p = subprocess.Popen([sys.executable, "-c", CLI, "phantom", "--seed", "1", "--out", str(tmp_path / "p")],
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    stamps = [time.time()]
    lines = []
    for line in p.stderr:
        stamps.append(time.time())
        lines.append(line)
    assert p.wait() == 0
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert any("anatomy: slices" in line for line in lines) and any("writing" in line for line in lines)
    # under heavy load a gap may stretch: the bound is what a user would call "silent"
    assert max(gaps[1:]) < 20, list(zip(gaps, lines))


def test_train_demo_reports_inside_an_epoch(monkeypatch):
    """The demo recipe says "epoch e/E: batch b/B" while an epoch runs when it takes longer than
    PROGRESS_EVERY_S (here 0 s: every batch), and one line per epoch."""
    from saliency_inspector.training import demo_recipe

    monkeypatch.setattr(demo_recipe, "PROGRESS_EVERY_S", 0.0)
    import torch

    from saliency_inspector.models.demo_model import INPUT_SIZE

    said = []
    model = demo_recipe.build_demo_network(**demo_recipe.DEFAULT_ARCH_KWARGS)
    x = torch.zeros(16, 1, *INPUT_SIZE)
    y = torch.zeros(16, len(demo_recipe.DEMO_CLASSES))
    _, _, lesion_logits = model.hirescam(x[:1], with_lesion_logits=True)
    cells = torch.zeros((16, lesion_logits.shape[1] + 1, *lesion_logits.shape[2:]))
    demo_recipe._fit(model, x, y, cells, 1, torch.Generator().manual_seed(0), said.append)
    assert [s.strip() for s in said[:2]] == ["epoch 1/1: batch 1/2", "epoch 1/1: batch 2/2"]
    assert said[-1].startswith("epoch 1/1: loss")
