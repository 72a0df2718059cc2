"""The self-explaining demo networks and the demo recipe that trains them (issue 25).

Known answers: both networks are the demo network with a gate before the lesion map, so HiResCAM
at ``lesion_map`` still sums exactly to logit − bias; closing the gate makes the decision blind to
the input (the head sees only gated features); the saliency map's own mask loss is what makes it
learn the lesion cells; the mixed-size training data are the same made in one process or two, and
a training case made larger than the model input arrives smoother, as a real larger CT does.
"""

import numpy as np
import pytest
import torch

from saliency_inspector.models import demo_model as dm
from saliency_inspector.models.attention_models import ARCHITECTURES, GATES
from saliency_inspector.training import demo_recipe

SMALL = dict(in_channels=1, num_classes=4, channels=[4, 8, 8], input_size=[16, 32, 32], map_channels=4,
             coordinates=True)


def _net(arch, seed=0):
    torch.manual_seed(seed)
    return ARCHITECTURES[arch](**SMALL).eval()


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_hirescam_at_the_lesion_map_still_sums_to_the_logit_minus_bias(arch):
    net = _net(arch)
    x = torch.rand(2, 1, 16, 32, 32)
    with torch.no_grad():
        logits, maps = net.hirescam(x)
        np.testing.assert_allclose(logits, net(x), atol=1e-5)
        np.testing.assert_allclose(maps.sum((2, 3, 4)), logits - net.classifier.bias, atol=1e-4)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_a_closed_gate_leaves_the_decision_blind_to_the_input(arch):
    net = _net(arch)
    gates = [net.get_submodule(path) for path in GATES[arch]]
    # MONAI AttentionBlocks gate through their `psi` (sigmoid): close it there; the saliency gate is the sigmoid
    handles = [(g.psi if hasattr(g, "psi") else g).register_forward_hook(lambda m, i, o: torch.zeros_like(o))
               for g in gates]
    a, b = torch.zeros(1, 1, 16, 32, 32), 5 * torch.rand(1, 1, 16, 32, 32)
    with torch.no_grad():
        closed = net(a), net(b)
        for h in handles:
            h.remove()
        opened = net(a), net(b)
    np.testing.assert_allclose(closed[0], closed[1], atol=1e-6)  # only the cells' positions remain
    assert (opened[0] - opened[1]).abs().max() > 1e-3


def _tiny_lesion_data(n=8, seed=0):
    """Inputs with one bright block per case and its cells as the lesion targets (N, K + 1, d, h, w)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.2 * torch.rand(n, 1, 16, 32, 32, generator=g)
    cells = torch.zeros(n, 5, 4, 8, 8)
    for i in range(n):
        z, y, xx = (int(torch.randint(0, m - 1, (1,), generator=g)) for m in (4, 8, 8))
        x[i, 0, 4 * z:4 * z + 4, 4 * y:4 * y + 4, 4 * xx:4 * xx + 4] += 0.7
        cells[i, i % 4, z, y, xx] = cells[i, -1, z, y, xx] = 1.0
    y = cells[:, :4].flatten(2).amax(2)
    return x, y, cells


def _saliency_auc(net, x, cells):
    """ROC AUC of the saliency logits against the lesion cells (1: every lesion cell ranked first)."""
    from saliency_inspector.cohort.stats import roc_auc

    with torch.no_grad():
        net.hirescam(x)
        return roc_auc(cells[:, -1:].flatten().numpy() > 0, net.gate.logits.flatten().numpy())


@pytest.mark.slow
def test_the_saliency_maps_own_mask_loss_is_what_teaches_it_the_lesion_cells():
    x, y, cells = _tiny_lesion_data()
    auc = {}
    for name, supervised in (("masks", torch.ones(len(x), dtype=torch.bool)), ("none", None)):
        net = _net("trainable_saliency").train()
        demo_recipe._fit(net, x, y, cells, 20, torch.Generator().manual_seed(0), lambda m: None, supervised)
        # batch statistics: 20 steps do not settle BatchNorm's running averages (an eval-mode net
        # needs ~60 steps to reach the same AUC, too slow for a test)
        auc[name] = _saliency_auc(net.train(), x, cells)
    assert auc["masks"] > 0.95 and auc["masks"] > auc["none"] + 0.1, auc


def test_mixed_size_training_data_are_the_same_in_one_process_or_two(monkeypatch):
    # two cheap sizes stand in for the recipe's; the plan (sizes included) is drawn before any worker starts
    monkeypatch.setattr(dm, "TRAINING_PHANTOM_SIZES", (((64, 64, 32), 0.5), ((80, 80, 36), 0.5)))
    seeds = np.arange(6) + 7_000_000
    plan = dm.case_plan(seeds, np.random.default_rng(1))
    assert {size for _, _, size, _ in plan} == {(64, 64, 32), (80, 80, 36)}
    one = dm.make_dataset(seeds, np.random.default_rng(1), mixed_sizes=True, workers=1)
    two = dm.make_dataset(seeds, np.random.default_rng(1), mixed_sizes=True, workers=2)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_a_larger_phantom_reaches_the_model_smoother_as_a_real_larger_ct_does():
    from scipy import ndimage

    def liver_noise(size):
        x, _, organs, _, lesion = dm.make_example(123, [], dm.INPUT_SIZE, size)
        liver = ndimage.binary_erosion(organs[dm.DEMO_CLASSES.index("liver")], iterations=2)
        return x[liver].std()

    native, larger = liver_noise((64, 64, 32)), liver_noise((128, 128, 60))
    # the trilinear resize averages neighbouring voxels of the larger CT: ~0.03 vs ~0.017
    assert larger < 0.75 * native, (native, larger)


def test_the_recipe_refuses_options_that_do_not_fit_the_architecture(tmp_path):
    from saliency_inspector.errors import InputError

    with pytest.raises(InputError, match="--mask-fraction is for --arch trainable_saliency"):
        demo_recipe.train_demo_model(tmp_path, arch="attention_gated", mask_fraction=0.1)
    with pytest.raises(InputError, match="--arch 'unet'"):
        demo_recipe.train_demo_model(tmp_path, arch="unet")
    with pytest.raises(InputError, match="between 0 and 1"):
        demo_recipe.train_demo_model(tmp_path, arch="trainable_saliency", mask_fraction=1.5)
    assert not any(tmp_path.iterdir())
