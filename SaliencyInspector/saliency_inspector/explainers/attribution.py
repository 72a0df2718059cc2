"""One raw map of any registered method: :func:`attribute`, and :func:`run_estimators` for :func:`explain`.

Every method of the registry (:mod:`.registry`) runs here the same way: its function gets the
model, the input (1, C, *spatial), the class index and the :class:`EstimatorSettings`, and its map
comes back as a float32 tensor of the spatial shape (input channels summed: they are copies of the
one windowed CT, so by the chain rule the sum is the attribution of that CT voxel), on the input
grid, or for a CAM on the feature grid, which covers the same field of view.
"""

from __future__ import annotations

import time

from ..errors import InputError
from .registry import get_method
from .settings import Attribution, for_input, settings_from


def attribute(name, model, x, target: int, settings=None) -> Attribution:
    """Run method ``name`` (a registered name or a callable) for class index ``target`` on input ``x`` (1, C, *spatial).

    Returns an :class:`Attribution` whose ``map`` is a float32 tensor of the spatial shape (channels
    summed), on the input grid (CAMs: on the feature grid).
    """
    import torch

    method = get_method(name)
    settings = settings_from(settings)
    start = time.perf_counter()
    with torch.enable_grad():
        out = method.function(model, x, int(target), settings)
    result = out if isinstance(out, Attribution) else Attribution(out)
    result.map = _spatial(torch.as_tensor(result.map).detach(), x, method.name)
    if not torch.isfinite(result.map).all():
        raise InputError(f"estimator {method.name!r} returned NaN or infinite values")
    result.seconds = time.perf_counter() - start
    return result


def _spatial(t, x, name):
    spatial = x.ndim - 2
    t = t.float()
    while t.ndim > spatial + 1 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == spatial + 1:
        t = t.sum(0)
    if t.ndim != spatial:
        raise InputError(f"estimator {name!r} returned shape {tuple(t.shape)}; expected the input's spatial "
                         f"shape {tuple(x.shape[2:])} (optionally with batch and channel axes)")
    return t.to(x.device)


def run_estimators(classifier, prepared, estimators: dict, classes: dict, settings, layer=None, say=None) -> dict:
    """Every (method, class) map for :func:`explain` of the methods not computed in its CAM pass,
    raw on the model-input grid (put on the CT grid later, one at a time, by ``Explanation.map``).

    ``estimators``: name -> name or callable; ``classes``: class name -> index. Returns
    ``{"maps": {(method, class): raw Volume}, "info": {method: {class: {...}}}}``.
    """
    say = say or (lambda _m: None)
    settings = for_input(settings_from(settings), prepared, classifier.card, layer)
    x = prepared.tensor
    maps, info = {}, {}
    for method, spec in estimators.items():
        entry = get_method(spec)
        info[method] = {}
        for name, index in classes.items():
            say(f"{method} for class {name} ({entry.cost})")
            result = attribute(spec, classifier.module, x, index, settings)
            maps[(method, name)] = prepared.raw_volume(result.map)
            info[method][name] = {"seconds": round(result.seconds, 4), "family": entry.family,
                                  **{k: v for k, v in result.info.items()}}
    return {"maps": maps, "info": info}
