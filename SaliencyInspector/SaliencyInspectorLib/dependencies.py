"""What the Slicer module must install, and the pins that keep pip from replacing Slicer's own packages.

Pure Python (no ``slicer`` import): the module's Logic calls these and does the installing with
Slicer's functions; the tests run them outside Slicer, on real pip reports.

Why pins: monai requires torch (monai 1.6.1: torch>=2.8 on Python 3.12; 1.5.2: torch>=2.4.1 on
3.9). Without a constraint pip would replace the PyTorch extension's (CUDA) torch, or Slicer's numpy,
while they are imported. So torch is installed first by the PyTorch extension, at a version that
satisfies every torch requirement of what pip will install (read from a ``pip install --dry-run
--report`` of the requirements), and then pip runs with a constraints file pinning torch, numpy,
SimpleITK, vtk and Slicer's other packages to the versions installed.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

# Installed by the PyTorch extension (torch) or by Slicer itself (its SuperBuild's
# External_python-*.cmake, 5.8 to 5.12, plus VTK and SimpleITK): pinned, so that what the module
# installs (captum needs matplotlib, which needs pillow, pyparsing, python-dateutil, packaging;
# scikit-image needs scipy, pillow) takes Slicer's versions as they are. A package that is not
# installed is not pinned.
PINNED_PACKAGES = ("torch", "numpy", "scipy", "SimpleITK", "vtk", "pillow", "pydicom", "packaging", "pyparsing",
                   "python-dateutil", "six", "typing_extensions", "requests", "urllib3", "certifi", "idna",
                   "charset-normalizer")


def load_requirements(path) -> list[Requirement]:
    """Requirements of a requirements.txt (comments, blank lines and ``-`` options skipped), as
    ``slicer.packaging.load_requirements`` (Slicer >= 5.12) reads them."""
    requirements = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "-")):
            requirements.append(Requirement(line))
    return requirements


def installed_version(name: str) -> str | None:
    """The installed distribution's version, or None (read from metadata: nothing is imported)."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def missing_requirements(requirements) -> list[Requirement]:
    """The requirements not installed at a version they accept (markers that do not apply are met)."""
    environment = default_environment()
    missing = []
    for requirement in requirements:
        requirement = Requirement(str(requirement))
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        installed = installed_version(requirement.name)
        if installed is None or not requirement.specifier.contains(installed, prereleases=True):
            missing.append(requirement)
    return missing


def constraints_text(packages=PINNED_PACKAGES) -> str:
    """A pip constraints file pinning each installed package of ``packages`` to its version.

    A package pip does not see as installed (no metadata) cannot be pinned; it is left out.
    """
    lines = [f"{name}=={installed_version(name)}" for name in packages if installed_version(name)]
    return "".join(line + "\n" for line in lines)


def write_constraints(folder, packages=PINNED_PACKAGES) -> Path:
    """Write :func:`constraints_text` to ``folder/constraints.txt``; returns the path."""
    path = Path(folder) / "constraints.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(constraints_text(packages))
    return path


def dry_run_arguments(requirements, report_path) -> list[str]:
    """``pip`` arguments that resolve ``requirements`` (and all they pull in) without installing,
    writing the resolution as a JSON report (pip >= 22.2; Slicer 5.8 ships pip 24)."""
    return ["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report_path),
            *[str(r) for r in requirements]]


def torch_requirement(report: dict, minimum: str = "") -> SpecifierSet:
    """The torch versions every package of a pip ``--report`` accepts, and ``minimum``.

    Each package pip would install lists its requirements (``metadata.requires_dist``, with
    markers); those on torch that apply to the report's environment (extras not requested) are
    combined into one specifier set: the strictest requirement of what will be installed.
    """
    environment = dict(report.get("environment") or default_environment())
    environment.setdefault("extra", "")
    specifier = SpecifierSet(minimum)
    for item in report.get("install", []):
        for text in item.get("metadata", {}).get("requires_dist", []) or []:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) != "torch":
                continue
            if requirement.marker is not None and not requirement.marker.evaluate({**environment, "extra": ""}):
                continue
            specifier &= requirement.specifier
    return specifier


def accepts(specifier: str, installed: str) -> bool:
    """Whether the version ``installed`` satisfies ``specifier`` (e.g. ">=2.2"; local tags such as
    ``+cpu`` and pre-releases accepted)."""
    return SpecifierSet(specifier).contains(installed, prereleases=True)
