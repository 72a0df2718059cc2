"""Randomization by parameters (explainers/randomization.py): exported programs are randomized like
the modules they came from, seeded without the global RNG, checked after every step; architectures
told apart by parameter names and shapes."""

import copy
import shutil

import numpy as np
import pytest
import torch

import saliency_inspector as si
from saliency_inspector.errors import InputError
from saliency_inspector.explainers.randomization import (architecture_signature, randomization_blocks,
                                                         randomize_block, randomized_maps)
from saliency_inspector.models import demo_model as dm
from saliency_inspector.models.demo_model import MODELS_DIR
from saliency_inspector.scoring import trust
from saliency_inspector.synth.phantom import make_phantom
from saliency_inspector.workflows.trust import architecture_of, run_trust

CARD = MODELS_DIR / "demo-phantom-lesions.json"


@pytest.fixture(scope="module")
def case():
    return make_phantom(seed=5, size=(64, 64, 32), lesions=["lung_left", "liver"], lesion_scale=1.8)


@pytest.fixture(scope="module")
def demo():
    return si.load_classifier("demo", device="cpu")


def export(module, folder, name):
    """``module`` as a .pt2 (torch.export, static batch 1 at the demo input size) with the demo card."""
    program = torch.export.export(copy.deepcopy(module).eval(), (torch.zeros(1, 1, 32, 64, 64),))
    path = folder / f"{name}.pt2"
    torch.export.save(program, str(path))
    shutil.copy(CARD, folder / f"{name}.json")
    return si.load_classifier(str(path), card=str(folder / f"{name}.json"), device="cpu")


@pytest.fixture(scope="module")
def demo_pt2(demo, tmp_path_factory):
    return export(demo.module, tmp_path_factory.mktemp("pt2"), "demo")


def curve(clf, case, seed=0, mode="cascading"):
    return trust.randomization_curve(randomized_maps(clf, case.ct, "hirescam", "lung_left", mode=mode, seed=seed),
                                     "hirescam", mode)


@pytest.mark.slow
def test_a_pt2_is_randomized_exactly_like_its_module(case, demo, demo_pt2):
    assert type(demo_pt2.module).__name__ == "UnflattenedModule"
    assert not hasattr(demo_pt2.module.classifier, "reset_parameters")  # the old rule did nothing here
    x = torch.zeros(1, 1, 32, 64, 64)
    assert randomization_blocks(demo_pt2.module, x) == randomization_blocks(demo.module, x)
    module, exported = curve(demo, case), curve(demo_pt2, case)
    assert exported.blocks == module.blocks
    assert np.allclose(exported.ssim, module.ssim, atol=1e-6, rtol=0)
    assert np.allclose(exported.spearman, module.spearman, atol=1e-6, rtol=0)
    assert exported.ssim[-1] < 0.5  # the exported model's map did change


@pytest.mark.slow
def test_seeds_matter_and_the_global_random_state_does_not(case, demo):
    torch.manual_seed(1)
    state = torch.random.get_rng_state()
    a = [m.volume.array for _, m in randomized_maps(demo, case.ct, "hirescam", "lung_left", seed=0)]
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    torch.manual_seed(2)
    b = [m.volume.array for _, m in randomized_maps(demo, case.ct, "hirescam", "lung_left", seed=0)]
    c = [m.volume.array for _, m in randomized_maps(demo, case.ct, "hirescam", "lung_left", seed=1)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert np.array_equal(a[0], c[0])  # the original map is the trained model's
    assert all(not np.allclose(x, y) for x, y in zip(a[1:], c[1:]))


def test_the_initialiser_and_its_checks():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(4, 64, 3), torch.nn.BatchNorm3d(64))
    randomize_block(net, seed=3)
    w = net[0].weight.detach().double()
    fan_in = 4 * 27
    assert w.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)  # He normal
    assert abs(w.mean().item()) < 0.01
    assert (net[1].running_var > 0).all() and net[1].num_batches_tracked.dtype == torch.int64
    assert net[0].bias.abs().max().item() <= 1 / 64 ** 0.5
    with pytest.raises(InputError, match="no floating-point parameters or buffers"):
        randomize_block(torch.nn.ReLU(), seed=0, block_name="act")
    empty = torch.nn.Linear(0, 3)  # its weight has no element: a redraw cannot change it
    empty.bias = None
    with pytest.raises(RuntimeError, match="left its weights unchanged"):
        randomize_block(empty, seed=0, block_name="empty")


def test_architectures_are_told_apart_by_parameters_not_class_names(demo, demo_pt2, tmp_path):
    twin = export(si.load_classifier(str(MODELS_DIR / "demo-phantom-lesions-seed1.pt"), device="cpu").module,
                  tmp_path, "twin") if (MODELS_DIR / "demo-phantom-lesions-seed1.pt").is_file() else None
    torch.manual_seed(0)
    narrow = export(dm.build_demo_network(**{**dm.DEFAULT_ARCH_KWARGS, "channels": [4, 8, 16]}), tmp_path, "narrow")
    assert type(narrow.module).__name__ == type(demo_pt2.module).__name__  # both "UnflattenedModule"
    assert architecture_of(narrow) != architecture_of(demo_pt2)
    assert architecture_of(demo_pt2) == architecture_of(demo)  # the module and its export
    assert architecture_signature(demo.module) == architecture_signature(demo_pt2.module)
    if twin is not None:
        assert architecture_of(twin) == architecture_of(demo_pt2)


@pytest.mark.slow
def test_two_pt2_of_one_architecture_are_repeatability_and_a_pt2_passes_where_its_module_passes(
        case, demo, demo_pt2, tmp_path):
    torch.manual_seed(7)  # another "training": the same network with other weights
    other = export(dm.build_demo_network(**dm.DEFAULT_ARCH_KWARGS), tmp_path, "other")
    row = run_trust(case.ct, [demo_pt2, other], methods=["hirescam"], class_name="lung_left").card.rows["hirescam"]
    assert row["repeatability"].verdict != "not measured" and row["reproducibility"].verdict == "not measured"
    module_row = run_trust(case.ct, [demo], methods=["hirescam"], class_name="lung_left").card.rows["hirescam"]
    assert module_row["randomization"].verdict == "pass"
    assert row["randomization"].verdict == "pass"
    assert row["randomization"].value == pytest.approx(module_row["randomization"].value, abs=1e-6)
