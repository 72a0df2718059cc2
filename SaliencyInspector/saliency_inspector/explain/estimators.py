"""User estimators: a Python callable ``fn(model, x, target)`` registered under a name.

A minimal registry for the trust checks (issue 13) until the estimator registry of
``explain/attribution.py`` (issue 12) lands; then this module gives way to that one. ``fn`` gets
the eval-mode ``nn.Module``, the model-input tensor ``x`` (1, C, *spatial, in the card's axis
order) and the class index ``target``, and returns a map (tensor or array) of x's spatial shape, or
any 3D shape that covers the input's field of view (a feature map), with optional leading 1-dims.
That is how tests inject a known-answer "method" (the CT intensity, which ignores the model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import InputError


@dataclass(frozen=True)
class Estimator:
    """A registered estimator: name, the callable, and a one-line description."""

    name: str
    function: Callable
    description: str = ""


ESTIMATORS: dict = {}  # name -> Estimator


def register_estimator(name: str, function: Callable, description: str = "", overwrite: bool = False) -> Estimator:
    """Register ``function(model, x, target) -> map`` under ``name`` (usable as a ``--method``)."""
    from .cam import METHODS

    if not callable(function):
        raise InputError(f"estimator {name!r}: {function!r} is not callable")
    if name in METHODS or (name in ESTIMATORS and not overwrite):
        raise InputError(f"estimator name {name!r} is taken; choose another or pass overwrite=True")
    ESTIMATORS[name] = Estimator(name, function, description)
    return ESTIMATORS[name]


def unregister_estimator(name: str) -> None:
    """Forget a registered estimator (no error when it is not there)."""
    ESTIMATORS.pop(name, None)


def ct_intensity(model, x, target):
    """The model input itself (the windowed CT, channel 0): a "method" that ignores the model; the
    trust card's known-answer negative control and its localization baseline (c)."""
    return x[0, 0].detach()


def known_methods() -> list:
    """Names usable as a method: the CAMs plus the registered estimators."""
    from .cam import METHODS

    return list(METHODS) + list(ESTIMATORS)


def resolve(method) -> tuple:
    """(name, callable or None): None means a CAM of :data:`cam.METHODS`; a callable passed directly
    is used under its ``__name__``."""
    from .cam import METHODS

    if callable(method):
        return getattr(method, "__name__", "custom"), method
    if method in METHODS:
        return method, None
    if method in ESTIMATORS:
        return method, ESTIMATORS[method].function
    raise InputError(f"unknown method {method!r}; choose from {', '.join(known_methods())} "
                     "or register a callable with register_estimator(name, fn)")
