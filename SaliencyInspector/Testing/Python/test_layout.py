"""The core's dependency rules (DESIGN.md, *Layout*) kept by a check, not by memory.

- ``io/`` uses nothing of ours but ``errors``;
- the generic loader (``models/loaders.py`` with ``card``, ``weights``, ``bundle``) does not know the demo model;
- only ``mrml.py`` imports ``slicer``;
- dependencies point down the concerns: explainers → models, io; scoring, view → io (view also reads
  the method registry of explainers for display labels);
- nothing but the CLI (``cli.py``, ``cli_commands.py``), the Slicer module and other workflows imports ``workflows/``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "saliency_inspector"
SUBPACKAGES = ("io", "models", "explainers", "scoring", "view", "synth", "training", "cohort", "workflows")
# what each subpackage may import of ours, besides itself and the top-level errors module
ALLOWED = {
    "io": set(),
    "models": {"io", "synth"},  # synth: the demo model trains on phantoms
    "explainers": {"models", "io"},
    "scoring": {"io"},
    # the report reads the metric registry for its legend and the method registry for its labels
    "view": {"io", "scoring", "explainers"},
    "synth": {"io"},
    # the mask loss needs the explain engine's differentiable HiResCAM and the models it trains; as
    # part of models/ it would make models <-> explain a cycle, so training is its own concern
    "training": {"models", "explainers", "io"},
    # the per-case work of a cohort uses the concern packages, never a workflow
    "cohort": {"io", "models", "explainers", "scoring", "view", "synth"},
}


def ours_imported_by(path: Path) -> set[str]:
    """Dotted names (relative to the package) of every module of ours that ``path`` imports."""
    package = path.relative_to(CORE).parent.parts  # () for top-level modules
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = list(package[:len(package) - (node.level - 1)]) if node.level > 1 else list(package)
            if node.level - 1 > len(package):
                raise AssertionError(f"{path}: relative import above the package")
            module = base + (node.module.split(".") if node.module else [])
            if node.module:
                found.add(".".join(module))
            for alias in node.names:  # `from . import x` / `from ..models import demo_model`
                found.add(".".join(module + [alias.name]))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("saliency_inspector"):
            parts = node.module.split(".")[1:]
            found.add(".".join(parts))
            found.update(".".join(parts + [a.name]) for a in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("saliency_inspector."):
                    found.add(alias.name.split(".", 1)[1])
    return {name for name in found if name}


def third_party_imported_by(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def core_files():
    return sorted(p for p in CORE.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_layout_has_every_subpackage_with_a_docstring_only_init():
    for name in SUBPACKAGES:
        init = CORE / name / "__init__.py"
        assert init.is_file(), f"{name}/__init__.py is missing"
        tree = ast.parse(init.read_text())
        assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr) and \
            isinstance(tree.body[0].value, ast.Constant), f"{name}/__init__.py must be a docstring only"


def test_io_imports_no_other_subpackage():
    for path in (CORE / "io").rglob("*.py"):
        for name in ours_imported_by(path):
            top = name.split(".")[0]
            assert top in ("io", "errors"), f"{path.relative_to(CORE)} imports {name}; io/ uses nothing of ours"


def test_subpackages_import_only_what_the_design_allows():
    for name, allowed in ALLOWED.items():
        for path in (CORE / name).rglob("*.py"):
            for imported in ours_imported_by(path):
                top = imported.split(".")[0]
                assert top in allowed | {name, "errors"}, \
                    f"{path.relative_to(CORE)} imports {imported}; {name}/ may use {sorted(allowed) or 'nothing'}"


def test_no_concern_package_imports_a_workflow():
    """workflows/ compose the concern packages; the arrow never points back (DESIGN.md, Layout)."""
    for path in core_files():
        rel = path.relative_to(CORE)
        if rel.parts[0] in ("workflows", "cli.py", "cli_commands.py", "__init__.py"):
            continue
        for imported in ours_imported_by(path):
            assert imported.split(".")[0] != "workflows", f"{rel} imports {imported}; only the CLI and workflows may"


def test_no_function_shares_a_subpackage_name():
    """`si.explain` is a function and `saliency_inspector.explainers` a package: no name is both."""
    import saliency_inspector as si

    subpackages = {p.parent.name for p in CORE.glob("*/__init__.py")}
    assert not subpackages & set(si.__all__), subpackages & set(si.__all__)


def test_the_generic_loader_does_not_know_the_demo_model():
    for module in ("loaders", "card", "weights", "bundle"):
        path = CORE / "models" / f"{module}.py"
        imported = ours_imported_by(path)
        assert not any("demo_model" in name for name in imported), f"models/{module}.py imports {imported}"
    # and at run time: importing the loader leaves the demo model unimported
    code = ("import sys, saliency_inspector.models.loaders as l; "
            "assert 'saliency_inspector.models.demo_model' not in sys.modules, 'demo imported'; "
            "assert 'demo' not in l.SOURCES; "
            "import saliency_inspector.models.demo_model; assert 'demo' in l.SOURCES and 'demo' in l.ARCHITECTURES")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_only_mrml_imports_slicer_and_nothing_imports_qt():
    for path in core_files():
        names = third_party_imported_by(path)
        assert not {"qt", "ctk", "__main__"} & names, f"{path.relative_to(CORE)} imports Qt/ctk"
        if "slicer" in names:
            assert path == CORE / "mrml.py", f"{path.relative_to(CORE)} imports slicer; only mrml.py may"


def test_the_checker_sees_relative_and_absolute_imports(tmp_path):
    """The rule checker itself: a module that breaks each rule is caught."""
    fake = CORE / "io" / "_layout_probe.py"
    try:
        fake.write_text("from ..models import demo_model\nfrom saliency_inspector.explainers.cam import x\n")
        assert ours_imported_by(fake) >= {"models", "models.demo_model", "explainers.cam"}
        with pytest.raises(AssertionError, match="io/ uses nothing"):
            test_io_imports_no_other_subpackage()
        fake.write_text("import slicer\n")
        with pytest.raises(AssertionError, match="only mrml.py"):
            test_only_mrml_imports_slicer_and_nothing_imports_qt()
    finally:
        fake.unlink()


@pytest.mark.slow
def test_public_api_names_resolve_lazily_and_explain_stays_a_function():
    code = (
        "import sys, saliency_inspector as si\n"
        "assert 'torch' not in sys.modules, 'import saliency_inspector imported torch'\n"
        "from saliency_inspector.explainers import cam\n"  # importing the subpackage first must not hide si.explain
        "from saliency_inspector.scoring import ranking\n"
        "assert callable(si.explain) and si.explain.__name__ == 'explain', si.explain\n"
        "assert callable(si.evaluate) and si.evaluate.__name__ == 'evaluate', si.evaluate\n"
        "for name in si.__all__: getattr(si, name)\n"
        "assert si.load_classifier('demo', device='cpu').card.name\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_a_wheel_ships_every_subpackage_and_its_cli_runs(tmp_path):
    """pyproject finds the subpackages: a wheel built from a copy of the sources, installed into an
    empty folder placed first on sys.path, imports every subpackage and runs `--help`."""
    import shutil

    pytest.importorskip("setuptools", minversion="77")
    root = CORE.parents[1]
    src = tmp_path / "src"
    shutil.copytree(CORE, src / "SaliencyInspector" / "saliency_inspector",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("saliency_inspector-*.whl"))
    target = tmp_path / "site"
    subprocess.run(pip + ["install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    code = ("import importlib, sys, saliency_inspector as si\n"
            f"assert si.__file__.startswith({str(target)!r}), si.__file__\n"
            f"for name in {SUBPACKAGES!r}: importlib.import_module('saliency_inspector.' + name)\n"
            "from saliency_inspector.cli import main\n"
            "sys.argv = ['saliency-inspector', '--help']\n"
            "main()\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(target)}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "explain" in run.stdout and "evaluate" in run.stdout
    installed = {p.relative_to(target).as_posix() for p in (target / "saliency_inspector").rglob("*.py")}
    expected = {p.relative_to(CORE.parent).as_posix() for p in CORE.rglob("*.py") if "__pycache__" not in p.parts}
    assert installed == expected
