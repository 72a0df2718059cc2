"""Shared fixtures: small synthetic volumes with known geometry, a small phantom case (in memory and on
disk), and the shipped demo classifier on the CPU.

The session-scoped ones are built once for the whole run: tests must only read them.
"""

from __future__ import annotations

import numpy as np
import pytest

from saliency_inspector.io.volume import Volume


def rotation(ax_deg: float, ay_deg: float, az_deg: float = 0.0) -> np.ndarray:
    """A proper rotation matrix (det +1) from angles about x, then y, then z (degrees)."""
    a, b, c = np.deg2rad([ax_deg, ay_deg, az_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


# A voxel (i, j, k) that holds the one bright point of `oblique_volume`.
POINT_IJK = (7, 11, 5)


@pytest.fixture
def oblique_volume() -> Volume:
    """Oblique, anisotropic int16 volume with a non-zero origin and one bright voxel at POINT_IJK.

    Size 20×24×12 (x×y×z) so every axis has a different length (catches transposed axes).
    """
    array = np.full((12, 24, 20), -1000, np.int16)
    i, j, k = POINT_IJK
    array[k, j, i] = 1000
    return Volume(array, spacing=(0.7, 0.9, 2.5), origin=(-120.5, 34.25, -310.0),
                  direction=rotation(12.0, -7.0, 20.0))


@pytest.fixture(scope="session")
def small_phantom():
    """A small phantom case (48×48×32 voxels) with lesions in the liver and the left lung."""
    from saliency_inspector.synth.phantom import make_phantom

    return make_phantom(seed=3, size=(48, 48, 32), lesions=["liver", "lung_left"])


@pytest.fixture(scope="session")
def small_phantom_files(small_phantom, tmp_path_factory):
    """`small_phantom` written once: paths of ct.nrrd, organs.seg.nrrd, lesions.seg.nrrd and case.json."""
    from saliency_inspector.synth.phantom import write_phantom_case

    return write_phantom_case(small_phantom, tmp_path_factory.mktemp("small_phantom"))


@pytest.fixture(scope="session")
def demo_cpu():
    """The shipped demo classifier on the CPU (explain leaves it as it was; never change its weights)."""
    from saliency_inspector.models.demo_model import demo_classifier

    return demo_classifier(device="cpu")
