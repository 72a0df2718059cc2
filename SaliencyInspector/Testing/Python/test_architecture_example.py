"""docs/architecture.md's example — a method of one's own registered, then seen in `compare` — run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[3] / "docs" / "architecture.md"


@pytest.mark.slow
def test_architecture_example_registers_a_method_and_compare_shows_it(tmp_path):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(1)
    assert "register_method(" in code and "compare_estimators(" in code
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # the table printed by compare has the custom method's row under its registered name
    rows = [line for line in done.stdout.splitlines() if line.strip().startswith("local_contrast")]
    assert rows, done.stdout
