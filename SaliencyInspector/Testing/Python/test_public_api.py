"""The public surface is listed once (``saliency_inspector/__init__.pyi``), typed, and true to the code.

- mypy --strict accepts the stub and a client that uses it (``typing_client.py``);
- the stub's names are exactly ``si.__all__`` and each resolves at run time;
- every function in the stub has the run-time function's parameters, in order, with the same
  defaults where the stub states them (so the stub cannot drift from the code).
"""

from __future__ import annotations

import ast
import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import saliency_inspector as si

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
STUB = ROOT / "SaliencyInspector" / "saliency_inspector" / "__init__.pyi"


def stub_tree() -> ast.Module:
    return ast.parse(STUB.read_text(encoding="utf-8"), filename=str(STUB))


def stub_all() -> list:
    for node in stub_tree().body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if getattr(target, "id", "") == "__all__" and node.value is not None:
            return list(ast.literal_eval(node.value))
    raise AssertionError("the stub has no __all__")


def test_py_typed_marker_ships_with_the_package():
    assert (STUB.parent / "py.typed").is_file()


def test_stub_lists_exactly_the_public_names_and_each_resolves():
    assert sorted(stub_all()) == sorted(si.__all__)
    for name in si.__all__:
        getattr(si, name)


def test_stub_functions_have_the_runtime_parameters():
    checked = 0
    for node in stub_tree().body:
        if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
            continue
        runtime = inspect.signature(getattr(si, node.name))
        args = node.args
        stub_names = [a.arg for a in args.posonlyargs + args.args] + \
            ([f"*{args.vararg.arg}"] if args.vararg else []) + [a.arg for a in args.kwonlyargs] + \
            ([f"**{args.kwarg.arg}"] if args.kwarg else [])
        runtime_names = [("*" if p.kind == p.VAR_POSITIONAL else "**" if p.kind == p.VAR_KEYWORD else "") + p.name
                         for p in runtime.parameters.values()]
        assert stub_names == runtime_names, f"{node.name}: stub {stub_names} != code {runtime_names}"
        positional = args.posonlyargs + args.args
        defaults = dict(zip([a.arg for a in positional][len(positional) - len(args.defaults):], args.defaults))
        defaults.update({a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None})
        for name, value in defaults.items():
            if isinstance(value, ast.Constant) and value.value is not Ellipsis:
                assert runtime.parameters[name].default == value.value, f"{node.name}({name}=...) differs"
        checked += 1
    assert checked >= 20


@pytest.mark.slow
def test_mypy_strict_accepts_the_public_surface():
    if shutil.which("mypy", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("mypy is not installed in this environment (it is in the test extra)")
    done = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
