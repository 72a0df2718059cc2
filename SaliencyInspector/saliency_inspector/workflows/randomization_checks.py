"""Randomization checks that need a model: the fully randomized maps eMPRT compares (any number of
seeds), and the data-randomization check (a model trained on shuffled labels, ``train-demo
--shuffle-labels``, against the real one). The judging is :mod:`..scoring.randomization_tests`'s;
the maps come from :func:`..explainers.randomization.randomized_maps` and ``input_map``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from ..io.volume import Volume


def fully_randomized_maps(classifier, ct, method, class_name, seeds: Iterable[int], layer=None, prepared=None):
    """Yield ``(seed, trained map, fully randomized map)`` (Volumes on the model-input grid): the first
    and last map of a cascading randomization per seed (``explainers.randomization.randomized_maps``)."""
    from ..explainers.randomization import prepare, randomized_maps

    prepared = prepared or prepare(classifier, ct)
    for seed in seeds:
        first = last = None
        for _block, item in randomized_maps(classifier, ct, method, class_name, mode="cascading", seed=int(seed),
                                            layer=layer, prepared=prepared):
            first = item if first is None else first
            last = item
        yield int(seed), first.volume, last.volume


def last_step_model(classifier, prepared, seed: int = 0, mode: str = "cascading"):
    """A copy of the classifier's module as it stands at the LAST step of
    :func:`..explainers.randomization.randomized_maps` (same blocks, same per-step seeds
    ``seed * 1000 + step``): cascading, every block redrawn; independent, only the input block.
    The trust card runs it on every cohort case, so the randomization verdict's interval covers the
    randomized SSIM of several cases, not only this CT's (the weights do not depend on the case)."""
    import copy

    from ..explainers.randomization import randomization_blocks, randomize_block

    blocks = list(reversed(randomization_blocks(classifier.module, prepared.tensor)))
    model = copy.deepcopy(classifier.module).eval()
    modules = dict(model.named_modules())
    steps = list(enumerate(blocks, start=1))
    for step, name in (steps if mode == "cascading" else steps[-1:]):
        randomize_block(modules[name], seed * 1000 + step, name)
    return model


def data_randomization_check(real, shuffled, cts: Sequence[Volume], method: str = "hirescam", class_name=None,
                             normalisation: str | None = None, layer=None, seed: int = 0, resamples: int = 2000):
    """:func:`..scoring.randomization_tests.data_randomization` on ``cts`` (the same cases under both
    classifiers, maps on each model's input grid; every CT must give the same input grid shape)."""
    from ..explainers.randomization import class_index, input_map, prepare
    from ..explainers.registry import get_method
    from ..scoring.masks import body_mask
    from ..scoring.randomization_tests import data_randomization

    norm = normalisation or get_method(method).importance  # the method's declared importance
    real_maps, shuffled_maps, bodies = [], [], []
    for ct in cts:
        p_real, p_shuffled = prepare(real, ct), prepare(shuffled, ct)
        real_maps.append(input_map(real.module, p_real, method, class_index(real, class_name),
                                   layer or real.card.target_layer, real.card.attention_gates).volume)
        shuffled_maps.append(input_map(shuffled.module, p_shuffled, method, class_index(shuffled, class_name),
                                       layer or shuffled.card.target_layer, shuffled.card.attention_gates).volume)
        bodies.append(body_mask(ct, p_real.grid))
    return data_randomization(real_maps, shuffled_maps, bodies, norm, seed, resamples)
