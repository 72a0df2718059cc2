"""The README's Python example, run verbatim (after the phantom command the README gives before it)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[3] / "README.md"


def python_section() -> str:
    text = README.read_text(encoding="utf-8")
    return text[text.index("\n## Python\n"):text.index("\n### Model card")]


@pytest.mark.slow
def test_readme_python_example_runs_as_written(tmp_path):
    section = python_section()
    # the command the README says to run first, as written (./run.sh cli -> this interpreter's CLI)
    command = re.search(r"after\s+`(\./run\.sh cli [^`]+)`", section).group(1)
    argv = shlex.split(command)[2:]
    done = subprocess.run([sys.executable, "-m", "saliency_inspector.cli", *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "demo_classifier()" in code and "model.pt2\")            " not in code
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # print(res) is one short line, not arrays; the table follows
    assert lines[0].startswith("Explanation(") and len(lines[0]) < 400 and "array" not in lines[0]
    assert "liver" in lines[0] and "region:" in done.stdout and "ROC AUC" in done.stdout
