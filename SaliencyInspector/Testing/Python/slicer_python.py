"""The Python packages each 3D Slicer line ships, read from Slicer's source.

Source: github.com/Slicer/Slicer ``SuperBuild/External_python-*.cmake`` (each writes a
requirements file of ``name==version --hash=...`` lines), ``External_python.cmake`` /
``CMakeLists.txt`` (``Slicer_REQUIRED_PYTHON_VERSION``), at tags v5.8.1, v5.10.0, v5.12.0 and main.
VTK and (before 5.12) SimpleITK are built from source by the SuperBuild, not pip-installed; they
are importable in Slicer all the same. torch is the PyTorch extension's (the module's
EXTENSION_DEPENDS), installed by PyTorchUtils. ``test_slicer_dependencies.py`` re-reads the table
from the source when a clone is present (SLICER_SOURCE).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

# line -> (tag, Python, {distribution: version}); pip, setuptools and wheel left out
_COMMON_58 = {"chardet": "5.2.0", "couchdb": "1.2", "gitdb": "4.0.11", "smmap": "5.0.1", "GitPython": "3.1.43",
              "cryptography": "42.0.7", "wrapt": "1.16.0", "Deprecated": "1.2.14", "pycparser": "2.22",
              "cffi": "1.16.0", "PyNaCl": "1.5.0", "python-dateutil": "2.9.0.post0", "typing_extensions": "4.12.1",
              "PyGithub": "2.3.0"}
SLICER_PYTHON = {
    "5.8": ("v5.8.1", "3.9.10", {
        "numpy": "1.26.4", "scipy": "1.13.1", "pydicom": "2.4.4", "six": "1.16.0", "pillow": "10.3.0",
        "retrying": "1.3.4", "dicomweb-client": "0.59.1", "packaging": "24.0", "pyparsing": "3.1.2",
        "certifi": "2024.2.2", "idna": "3.7", "charset-normalizer": "3.3.2", "urllib3": "2.2.1",
        "requests": "2.32.3", **_COMMON_58}),
    "5.10": ("v5.10.0", "3.12.10", {
        "numpy": "2.0.2", "scipy": "1.13.1", "pydicom": "2.4.4", "six": "1.17.0", "pillow": "11.2.1",
        "retrying": "1.3.4", "dicomweb-client": "0.60.0", "packaging": "25.0", "pyparsing": "3.2.3",
        "certifi": "2025.4.26", "idna": "3.10", "charset-normalizer": "3.4.2", "urllib3": "2.4.0",
        "requests": "2.32.3", "chardet": "5.2.0", "couchdb": "1.2", "gitdb": "4.0.12", "smmap": "5.0.2",
        "GitPython": "3.1.44", "cryptography": "45.0.3", "PyJWT": "2.10.1", "wrapt": "1.17.2",
        "Deprecated": "1.2.18", "pycparser": "2.22", "cffi": "1.17.1", "PyNaCl": "1.5.0",
        "python-dateutil": "2.9.0.post0", "typing_extensions": "4.14.0", "PyGithub": "2.6.1"}),
}
_LATEST = {
    "simpleitk": "2.5.5", "numpy": "2.4.6", "scipy": "1.17.1", "pydicom": "3.0.2", "six": "1.17.0",
    "pillow": "12.2.0", "retrying": "1.4.2", "dicomweb-client": "0.61.0", "dcmqi": "0.4.0", "highdicom": "0.27.0",
    "pyjpegls": "1.5.1", "typing_extensions": "4.15.0", "chardet": "7.4.3", "couchdb": "1.2", "gitdb": "4.0.12",
    "smmap": "5.0.3", "GitPython": "3.1.50", "cryptography": "48.0.0", "PyJWT": "2.13.0", "wrapt": "2.2.1",
    "Deprecated": "1.3.1", "pycparser": "3.0", "cffi": "2.0.0", "PyNaCl": "1.6.2", "python-dateutil": "2.9.0.post0",
    "PyGithub": "2.9.1", "packaging": "26.2", "pyparsing": "3.3.2", "certifi": "2026.5.20", "idna": "3.16",
    "charset-normalizer": "3.4.7", "urllib3": "2.7.0", "requests": "2.34.2"}
SLICER_PYTHON["5.12"] = ("v5.12.0", "3.12.10", dict(_LATEST))
SLICER_PYTHON["main"] = ("main", "3.12.10", dict(_LATEST))
SKIPPED = {"pip", "setuptools", "wheel"}  # installers, not libraries the module could import

# import names of what Slicer has besides its pip-installed packages
BUILT_BY_SLICER = {"vtk", "vtkmodules", "SimpleITK", "slicer", "qt", "ctk", "SampleData", "ScriptedLoadableModule",
                   "mrml", "vtkAddon", "vtkITK", "vtkSegmentationCore", "DICOMLib"}
FROM_EXTENSIONS = {"torch": "PyTorch extension (PyTorchUtils)", "PyTorchUtils": "PyTorch extension"}
# distribution -> import names, where they differ
IMPORT_NAMES = {"pillow": {"PIL"}, "dicomweb-client": {"dicomweb_client"}, "PyGithub": {"github"},
                "GitPython": {"git"}, "python-dateutil": {"dateutil"}, "PyNaCl": {"nacl"}, "PyJWT": {"jwt"},
                "Deprecated": {"deprecated"}, "charset-normalizer": {"charset_normalizer"},
                "typing_extensions": {"typing_extensions"}, "simpleitk": {"SimpleITK"}, "scikit-image": {"skimage"},
                "pyjpegls": {"jpeg_ls"}, "dcmqi": set()}


def import_names(distribution: str) -> set:
    """The top-level import names of a distribution (its own name with - as _ unless listed)."""
    return IMPORT_NAMES.get(distribution, {distribution.replace("-", "_").lower()})


def shipped_imports(line: str) -> set:
    """Every top-level name ``import`` finds in that Slicer line's own Python (extensions aside)."""
    names = set(BUILT_BY_SLICER)
    for distribution in SLICER_PYTHON[line][2]:
        names |= import_names(distribution)
    return names


def read_slicer_source(repo, tag) -> tuple:
    """(Python version, {distribution: version}) read from a Slicer clone at ``tag``."""
    def show(path):
        return subprocess.run(["git", "-C", str(repo), "show", f"{tag}:{path}"], capture_output=True, text=True,
                              check=True).stdout

    files = subprocess.run(["git", "-C", str(repo), "ls-tree", "--name-only", tag, "SuperBuild/"],
                           capture_output=True, text=True, check=True).stdout.split()
    packages = {}
    for path in files:
        if Path(path).name.startswith("External_python-"):
            for name, ver in re.findall(r"^\s*([A-Za-z0-9_.-]+)==([0-9][^\s]*)", show(path), re.M):
                if name not in SKIPPED:
                    packages[name] = ver
    python = re.search(r'set\(Slicer_REQUIRED_PYTHON_VERSION "([0-9.]+)"\)', show("CMakeLists.txt")).group(1)
    return python, packages
