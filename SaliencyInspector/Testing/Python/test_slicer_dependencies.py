"""Every package the Slicer module can import is in Slicer's own Python or installed by the module.

The modules reachable from ``SaliencyInspector.py`` are found by following its imports through
``saliency_inspector/`` (module-level and function-level imports alike, package ``__init__`` files
included, since importing a submodule runs them); every third-party top-level name they import
must be shipped by each supported Slicer line (``slicer_python.SLICER_PYTHON``, read from Slicer's
SuperBuild), come from the PyTorch extension (torch), or be installed by the module's installer
(``Resources/requirements.txt``). Imports inside ``try: ... except ImportError`` are optional and
allowed.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

sys.path.insert(0, str(Path(__file__).parent))
import slicer_python  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
MODULE = ROOT / "SaliencyInspector"
ENTRY_POINTS = [MODULE / "SaliencyInspector.py", *sorted((MODULE / "SaliencyInspectorLib").glob("*.py"))]
OURS = {"saliency_inspector", "SaliencyInspectorLib", "SaliencyInspector"}
# imported by a reachable file, but on a code path the module never runs (the walk follows modules,
# not calls), or installed with a listed requirement; each is checked by a test that runs the module
# with the package made unimportable (test_slicer_module.py, test_trust_mrml.py)
NOT_ON_THE_MODULES_PATHS = {
    "nrrd": "io/segments.py reads .seg.nrrd FILES; the module takes segments from MRML (mrml.segments_from_node)",
    "slicerio": "io/segments.py reads .seg.nrrd FILES; the module takes segments from MRML",
}
WITH_A_REQUIREMENT = {"matplotlib": "captum's Requires-Dist (0.7 to 0.9); the module imports it only through "
                                    "view/trust_report.py, which the Logic never calls (run_trust without out_dir)"}


def _module_file(dotted: str) -> Path | None:
    path = MODULE.joinpath(*dotted.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _package_of(path: Path) -> str:
    parts = path.relative_to(MODULE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] != "__init__" else parts[:-1])


def _guarded(tree) -> set:
    """ids of import nodes inside ``try`` blocks that catch ImportError/ModuleNotFoundError."""
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            caught = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
            if any(name in text for text in caught for name in ("ImportError", "ModuleNotFoundError", "Exception")):
                for inner in node.body:
                    guarded |= {id(n) for n in ast.walk(inner) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return guarded


def reachable_imports() -> tuple[dict, dict]:
    """({third-party top-level name: first 'file:line'}, {optional name: 'file:line'}) of every module
    reachable from the Slicer module's files."""
    required, optional = {}, {}
    todo, seen = list(ENTRY_POINTS), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        guarded = _guarded(tree)
        package = _package_of(path) if path.parent != MODULE else ""
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this file's package
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    stem = ".".join([*base, node.module] if node.module else base)
                    targets = [stem] + [f"{stem}.{a.name}" for a in node.names]
                else:
                    targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for dotted in targets:
                top = dotted.split(".")[0]
                if top in OURS:
                    parts = dotted.split(".")
                    for i in range(1, len(parts) + 1):  # the packages' __init__ run too
                        found = _module_file(".".join(parts[:i]))
                        if found is not None:
                            todo.append(found)
                elif top not in sys.stdlib_module_names and top != "__future__":
                    where = f"{path.relative_to(MODULE)}:{node.lineno}"
                    (optional if id(node) in guarded else required).setdefault(top, where)
    return required, optional


def installed_by_module() -> set:
    lines = (MODULE / "Resources" / "requirements.txt").read_text().splitlines()
    names = set()
    for line in lines:
        line = line.strip()
        if line and not line.startswith(("#", "-")):
            names |= slicer_python.import_names(Requirement(line).name)
    return names


def test_the_walk_follows_function_level_imports_into_the_core():
    required, _optional = reachable_imports()
    # torch is imported only inside functions of the core; skimage only through trust -> similarity
    assert "torch" in required and "numpy" in required and "monai" in required
    assert "captum" in required, "the estimators' function-level captum imports are reachable"


@pytest.mark.parametrize("line", list(slicer_python.SLICER_PYTHON))
def test_every_package_the_module_reaches_is_shipped_or_installed(line):
    required, _optional = reachable_imports()
    allowed = (slicer_python.shipped_imports(line) | set(slicer_python.FROM_EXTENSIONS) | installed_by_module()
               | set(NOT_ON_THE_MODULES_PATHS) | set(WITH_A_REQUIREMENT))
    missing = {name: where for name, where in required.items() if name not in allowed}
    assert not missing, (f"Slicer {line} has no {sorted(missing)} and Resources/requirements.txt does not install "
                         f"them (first import: {missing})")


def test_requirements_are_not_what_slicer_or_an_extension_provides():
    provided = set().union(*(slicer_python.shipped_imports(line) for line in slicer_python.SLICER_PYTHON))
    assert not installed_by_module() & (provided | set(slicer_python.FROM_EXTENSIONS))


SLICER_SOURCE = Path(os.environ.get("SLICER_SOURCE", "/work/.mirror/Slicer+Slicer/repo"))


@pytest.mark.skipif(not (SLICER_SOURCE / "HEAD").exists() and not (SLICER_SOURCE / ".git").exists(),
                    reason="no clone of github.com/Slicer/Slicer (set SLICER_SOURCE)")
@pytest.mark.parametrize("line", list(slicer_python.SLICER_PYTHON))
def test_the_package_table_matches_slicers_superbuild(line):
    tag, python, packages = slicer_python.SLICER_PYTHON[line]
    assert slicer_python.read_slicer_source(SLICER_SOURCE, tag) == (python, packages)
