"""The synthetic CT phantom: plausible HU, anatomy in patient coordinates, lesions inside organs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import slicerio

from saliency_inspector.errors import InputError
from saliency_inspector.synth.phantom import DEFAULT_SIZE, FIELD_OF_VIEW_MM, ORGANS, make_phantom
from saliency_inspector.io.segments import read_segments
from saliency_inspector.io.volume import read_volume


def centroid_lps(volume, mask) -> np.ndarray:
    k, j, i = np.nonzero(mask)
    return volume.index_to_physical(np.stack([i, j, k], axis=1)).mean(axis=0)


def test_organs_have_plausible_hounsfield_units(small_phantom):
    ct, organs = small_phantom.ct, small_phantom.organs
    assert ct.array.dtype == np.int16
    assert organs.names == ORGANS
    mean = {name: float(ct.array[organs.mask(name)].mean()) for name in ORGANS}
    assert mean["lung_left"] < -600 and mean["lung_right"] < -600
    assert 40 <= mean["liver"] <= 80
    assert mean["spine"] > 300
    assert mean["aorta"] > 150          # contrast-enhanced
    assert 30 <= mean["spleen"] <= 130
    outside = ~organs.mask("body")
    assert ct.array[outside].mean() < -900  # air around the patient


def test_organs_are_disjoint_and_inside_the_body(small_phantom):
    organs = small_phantom.organs
    body = organs.mask("body")
    seen = np.zeros(body.shape, int)
    for name in ORGANS[1:]:
        mask = organs.mask(name)
        assert mask.sum() > 20, name
        assert not (mask & ~body).any(), name
        seen += mask
    assert seen.max() == 1


def test_anatomy_sides_in_lps(small_phantom):
    """LPS: +x is the patient's left, +y posterior, +z superior."""
    ct, organs = small_phantom.ct, small_phantom.organs
    c = {name: centroid_lps(ct, organs.mask(name)) for name in ORGANS}
    assert c["liver"][0] < c["body"][0] < c["spleen"][0]
    assert c["lung_right"][0] < c["lung_left"][0]
    assert c["kidney_right"][0] < c["kidney_left"][0]
    assert c["kidney_left"][1] > c["liver"][1] and c["spine"][1] > c["aorta"][1]  # kidneys, spine posterior
    assert c["lung_left"][2] > c["liver"][2] > c["kidney_left"][2]                 # lungs above liver above kidneys
    assert c["heart"][2] > c["liver"][2] and c["heart"][1] < c["spine"][1]


def test_lesions_lie_inside_their_organ_and_differ_from_it(small_phantom):
    ct, organs, lesions, info = small_phantom.ct, small_phantom.organs, small_phantom.lesions, small_phantom.info
    assert lesions.names == ["lesion_liver", "lesion_lung_left"]
    assert [d["name"] for d in info["lesions"]] == lesions.names
    for d in info["lesions"]:
        mask = lesions.mask(d["name"])
        organ = organs.mask(d["organ"])
        assert mask.any()
        assert not (mask & ~organ).any()
        # the recorded centre is a point of the lesion, and every lesion voxel is within the radius
        i, j, k = np.rint(ct.physical_to_index(d["center_lps"])).astype(int)
        assert mask[k, j, i]
        kk, jj, ii = np.nonzero(mask)
        pts = ct.index_to_physical(np.stack([ii, jj, kk], 1))
        assert np.linalg.norm(pts - d["center_lps"], axis=1).max() <= d["radius_mm"] + 1e-6
        assert ct.array[k, j, i] == pytest.approx(d["hu"], abs=60)  # one voxel: noise ~12 HU, partial volume
    lung = info["lesions"][1]
    lung_nodule = ct.array[lesions.mask(lung["name"])].mean()
    assert lung_nodule > -300  # a solid nodule in aerated lung (-860)


def test_lesion_at_larger_size_has_its_own_hu():
    case = make_phantom(seed=5, size=(96, 96, 40), lesions=["liver"])
    d = case.info["lesions"][0]
    lesion = case.lesions.mask(d["name"])
    liver = case.organs.mask("liver") & ~lesion
    assert lesion.sum() >= 8
    inner = case.ct.array[lesion].mean()
    assert abs(inner - d["hu"]) < 25
    assert case.ct.array[liver].mean() - inner > 30  # hypodense liver lesion


def test_deterministic_by_seed_and_seed_varies_anatomy():
    a = make_phantom(seed=11, size=(32, 32, 24))
    b = make_phantom(seed=11, size=(32, 32, 24))
    c = make_phantom(seed=12, size=(32, 32, 24))
    assert np.array_equal(a.ct.array, b.ct.array)
    assert a.info == b.info
    for name in ORGANS:
        assert np.array_equal(a.organs.mask(name), b.organs.mask(name))
    assert not np.array_equal(a.organs.mask("liver"), c.organs.mask("liver"))
    assert a.info["lesions"][0]["center_lps"] != c.info["lesions"][0]["center_lps"]


def test_spacing_from_fixed_field_of_view():
    assert np.allclose(np.asarray(FIELD_OF_VIEW_MM) / DEFAULT_SIZE, (0.78125, 0.78125, 2.5))
    case = make_phantom(size=(40, 50, 30), lesions=[])
    assert case.ct.size_xyz == (40, 50, 30)
    assert np.allclose(case.ct.spacing, (10.0, 8.0, 10.0))
    assert len(case.lesions) == 0 and case.info["lesions"] == []


def test_oblique_grid_keeps_anatomy_in_patient_coordinates():
    size = (48, 48, 40)
    straight = make_phantom(seed=2, size=size, lesions=[])
    tilted = make_phantom(seed=2, size=size, lesions=[], oblique=True)
    assert not np.allclose(tilted.ct.direction, np.eye(3))
    assert np.isclose(np.linalg.det(tilted.ct.direction), 1.0)
    for name in ["liver", "lung_left", "spine", "kidney_right"]:
        # each tilted organ voxel, looked up at its physical position in the straight phantom
        k, j, i = np.nonzero(tilted.organs.mask(name))
        pts = tilted.ct.index_to_physical(np.stack([i, j, k], 1))
        idx = np.rint(straight.ct.physical_to_index(pts)).astype(int)
        ok = np.all((idx >= 0) & (idx < np.array(size)), axis=1)
        hits = straight.organs.mask(name)[idx[ok, 2], idx[ok, 1], idx[ok, 0]]
        assert ok.mean() > 0.9 and hits.mean() > 0.7, name  # boundaries differ by up to a voxel
        assert np.linalg.norm(centroid_lps(tilted.ct, tilted.organs.mask(name))
                              - centroid_lps(straight.ct, straight.organs.mask(name))) < 12.0, name


def test_lesion_requests():
    case = make_phantom(seed=4, size=(48, 48, 32), lesions=["liver", "liver", "kidney", "lung"])
    names = case.lesions.names
    assert names[:2] == ["lesion_liver", "lesion_liver_2"]
    assert names[2] in ("lesion_kidney_left", "lesion_kidney_right")
    assert names[3] in ("lesion_lung_left", "lesion_lung_right")
    assert not (case.lesions.mask(names[0]) & case.lesions.mask(names[1])).any()
    assert [d["organ"] for d in case.info["lesions"]][:2] == ["liver", "liver"]
    assert make_phantom(size=(24, 24, 16)).lesions.names == ["lesion_liver"]  # default
    assert make_phantom(size=(24, 24, 16), lesions="spleen").lesions.names == ["lesion_spleen"]
    with pytest.raises(InputError, match="pancreas"):
        make_phantom(size=(24, 24, 16), lesions=["pancreas"])
    with pytest.raises(InputError, match="size"):
        make_phantom(size=(2, 2, 2))


def test_write_phantom_case(small_phantom, small_phantom_files):
    paths = small_phantom_files  # written by write_phantom_case
    assert {p.name for p in paths.values()} == {"ct.nrrd", "organs.seg.nrrd", "lesions.seg.nrrd", "case.json"}
    ct = read_volume(paths["ct"])
    assert ct.same_grid(small_phantom.ct) and np.array_equal(ct.array, small_phantom.ct.array)
    organs = read_segments(paths["organs"], reference=ct)
    assert organs.names == ORGANS
    for name in ORGANS:
        assert np.array_equal(organs.mask(name), small_phantom.organs.mask(name))
    seg = slicerio.read_segmentation(str(paths["lesions"]))
    assert slicerio.segment_names(seg) == small_phantom.lesions.names
    info = json.loads(paths["case"].read_text())
    assert info["lesions"][0]["organ"] == "liver" and info["seed"] == 3


def test_lesion_scale_grows_the_lesion_radius():
    small = make_phantom(seed=4, size=(96, 96, 40), lesions=["liver"])
    large = make_phantom(seed=4, size=(96, 96, 40), lesions=["liver"], lesion_scale=1.8)
    r_small, r_large = small.info["lesions"][0]["radius_mm"], large.info["lesions"][0]["radius_mm"]
    assert r_large == pytest.approx(1.8 * r_small, rel=1e-3)  # same seed: same random factor
    assert large.lesions.mask("lesion_liver").sum() > 3 * small.lesions.mask("lesion_liver").sum()
    assert np.all(large.organs.mask("liver")[large.lesions.mask("lesion_liver")])
