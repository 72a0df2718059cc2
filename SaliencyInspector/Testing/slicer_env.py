"""Build a Python environment that is a Slicer line's Python, not ours, and run the Slicer tests in it.

    python SaliencyInspector/Testing/slicer_env.py 5.8 [--cache DIR] [--core 5.11.0.6] [--python python3.11]

The venv gets, in this order and nothing else:
1. exactly the pip packages that Slicer line ships (``Testing/Python/slicer_python.py``, read from
   its ``SuperBuild/External_python-*.cmake``), SimpleITK, and the slicer-core build closest to it
   (``--no-deps``) with the vtk it was built with (Slicer builds its own VTK);
2. torch from the local wheel folder, standing in for the PyTorch extension;
3. the module's own installer path: ``Resources/requirements.txt`` with the constraints file that
   ``SaliencyInspectorLib.dependencies.constraints_text()`` writes inside that venv (as the Logic does);
4. the test tools: pytest and trame-slicer (offscreen views), under the same constraints, so they
   cannot change a package of steps 1-3 (pip fails instead).
Then it runs the Slicer test files there and exits with pytest's status. The venv is kept in the
cache folder (keyed by line and core), so a second run only runs the tests.

Python: the venv uses the interpreter given (default python3.11). Slicer 5.8 runs Python 3.9.10,
which this machine does not have: its packages are installed at 5.8's versions on 3.11, and pip
picks the newest captum/scikit-image/monai that 3.11 allows (on 3.9 it would pick older ones).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULE = HERE.parent
sys.path.insert(0, str(HERE / "Python"))
import slicer_python  # noqa: E402

# slicer-core builds on PyPI closest to each line, and the vtk each requires (its metadata)
CORE_FOR_LINE = {"5.8": "5.11.0.6", "5.10": "5.11.0.6", "5.12": "5.13.31053.0", "main": "5.13.31053.0"}
VTK_FOR_CORE = {"5.11.0.6": "9.6.0", "5.13.31053.0": "9.6.2"}
# SimpleITK: a pip package from 5.12 on (table); 5.8/5.10 build it from source (2.4 series)
SIMPLEITK_FOR_LINE = {"5.8": "2.4.1", "5.10": "2.4.1"}
# the extension manager's packages: Slicer ships them, the module never imports them, and couchdb 1.2 has
# no wheel; left out to keep the build short
NOT_INSTALLED = {"couchdb", "GitPython", "gitdb", "smmap", "PyGithub", "PyNaCl", "cryptography", "cffi",
                 "pycparser", "wrapt", "Deprecated", "PyJWT", "chardet", "dcmqi", "pyjpegls"}
TEST_FILES = ["test_slicer_static.py", "test_slicer_dependencies.py", "test_numpy_versions.py",
              "test_slicer_module.py", "test_slicer_widget.py", "test_mrml.py", "test_trust_mrml.py"]


def run(*args, **kwargs):
    print("+", " ".join(map(str, args)), flush=True)
    return subprocess.run([str(a) for a in args], check=True, **kwargs)


def build(line: str, venv: Path, core: str, python: str, wheels: str) -> dict:
    """Make the venv; returns {step: seconds}."""
    times = {}
    tag, _python, packages = slicer_python.SLICER_PYTHON[line]
    pip = [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    t = time.monotonic()
    run(python, "-m", "venv", venv)
    shipped = [f"{name}=={v}" for name, v in packages.items() if name not in NOT_INSTALLED]
    if "simpleitk" not in packages:
        shipped.append(f"SimpleITK=={SIMPLEITK_FOR_LINE[line]}")
    run(*pip, "--only-binary", ":all:", *shipped, f"vtk=={VTK_FOR_CORE[core]}")
    run(*pip, "--no-deps", f"slicer-core=={core}")
    times["Slicer's packages + slicer-core"] = time.monotonic() - t
    t = time.monotonic()
    # torch and its own requirements (filelock, sympy, networkx, jinja2, fsspec) as PyTorchUtils'
    # light-the-torch installs them: the local CPU wheel, Slicer's packages pinned
    constraints = venv / "constraints.txt"
    write = ("import sys; sys.path.insert(0, sys.argv[1]); from SaliencyInspectorLib import dependencies; "
             "open(sys.argv[2], 'w').write(dependencies.constraints_text())")
    run(venv / "bin" / "python", "-c", write, MODULE, constraints)
    wheel = sorted(Path(wheels).glob(f"torch-*-cp{sys.version_info.major}{sys.version_info.minor}-*.whl"))[-1]
    run(*pip, "--constraint", constraints, wheel)
    times["torch (PyTorch extension)"] = time.monotonic() - t
    t = time.monotonic()
    # the module's installer: Resources/requirements.txt with the constraints the Logic writes
    run(venv / "bin" / "python", "-c", write, MODULE, constraints)
    run(*pip, "--constraint", constraints, "--requirement", MODULE / "Resources" / "requirements.txt")
    times["module installer (requirements.txt + constraints)"] = time.monotonic() - t
    t = time.monotonic()
    run(*pip, "--constraint", constraints, "pytest", "trame-slicer==2.0.0")
    # trame-slicer's views need the layered displayable managers built for the same slicer-core
    run(*pip, "--no-deps", "slicer-layer-dm==2.0.0")
    times["test tools"] = time.monotonic() - t
    (venv / "ready").write_text(repr(times))
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("line", choices=list(slicer_python.SLICER_PYTHON))
    parser.add_argument("--core", help="slicer-core version (default: the build closest to the line)")
    parser.add_argument("--python", default="python3.11")
    parser.add_argument("--cache", default=os.environ.get("SI_SLICER_ENV_CACHE", "/tmp/si-slicer-envs"))
    parser.add_argument("--wheels", default="/opt/wheels", help="folder with a CPU torch wheel")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    core = args.core or CORE_FOR_LINE[args.line]
    venv = Path(args.cache) / f"slicer-{args.line}-core-{core}"
    if not (venv / "ready").is_file():
        t = time.monotonic()
        times = build(args.line, venv, core, args.python, args.wheels)
        print(f"built {venv} in {time.monotonic() - t:.0f} s: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    listing = subprocess.run([venv / "bin" / "python", "-m", "pip", "list", "--format=freeze"], capture_output=True,
                             text=True).stdout
    print("environment:", " ".join(listing.split()))
    if args.build_only:
        return 0
    files = [str(HERE / "Python" / name) for name in TEST_FILES if (HERE / "Python" / name).is_file()]
    env = {**os.environ, "PYTHONPATH": str(MODULE)}
    t = time.monotonic()
    code = subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", *files,
                           *args.pytest_args], cwd=MODULE.parent, env=env).returncode
    print(f"tests ran in {time.monotonic() - t:.0f} s (exit {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
