"""User estimators for the trust checks: the calls issue 13 wrote against, now kept by the one
estimator registry of :mod:`.attribution` (issue 12).

``register_estimator(name, fn, description)`` registers ``fn(model, x, target)`` (or any of the
signatures :func:`attribution.register_estimator` takes) in :data:`attribution.ESTIMATORS`, so a
name works everywhere a method does (``explain``, ``compare``, ``trust``), and every built-in
estimator (gradient, smoothgrad, ig, …) works in the trust checks through :func:`resolve`.
"""

from __future__ import annotations

from typing import Callable

from ..errors import InputError
from . import attribution

# the registry itself (name -> attribution.EstimatorInfo), shared with attribution
ESTIMATORS = attribution.ESTIMATORS


def register_estimator(name: str, function: Callable, description: str = "", overwrite: bool = False):
    """Register ``function(model, x, target) -> map`` under ``name`` (usable as a ``--method``)."""
    from .cam import METHODS

    if name in METHODS or (name in ESTIMATORS and not overwrite):
        raise InputError(f"estimator name {name!r} is taken; choose another or pass overwrite=True")
    return attribution.register_estimator(name, function, meaning=description, replace_existing=overwrite)


def unregister_estimator(name: str) -> None:
    """Forget a user-registered estimator (no error when it is not there; built-ins stay)."""
    info = ESTIMATORS.get(name)
    if info is not None and info.family == "custom":
        del ESTIMATORS[name]


def ct_intensity(model, x, target):
    """The model input itself (the windowed CT, channel 0): a "method" that ignores the model; the
    trust card's known-answer negative control and its localization baseline (c)."""
    return x[0, 0].detach()


def known_methods() -> list:
    """Names usable as a method: the CAMs plus the registered estimators."""
    return attribution.estimator_names()


def resolve(method) -> tuple:
    """(name, callable or None): None means a CAM of :data:`cam.METHODS`; otherwise a callable
    ``fn(model, x, target)`` returning the raw map (a registered or built-in estimator with default
    settings, or a callable passed directly, used under its ``__name__``)."""
    from .cam import METHODS

    if isinstance(method, str) and method in METHODS:
        return method, None
    info = attribution.get_estimator(method)  # InputError naming every method when unknown
    if info.family == "custom" and callable(method) and not isinstance(method, str):
        return info.name, method
    return info.name, lambda model, x, target: attribution.attribute(method, model, x, target).map
