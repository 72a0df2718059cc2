"""Reading weights safely: ``torch.load(..., weights_only=True)`` only, never a pickle of code,
with one-line explanations of what is wrong with a file that is not a state dict."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

from ..errors import InputError


def strip_prefix(state_dict: dict, prefix: str = "module.") -> dict:
    """Remove a DataParallel/DDP key prefix ("module.") when every key carries it."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def read_state_dict(path: Path) -> dict:
    """``torch.load(weights_only=True)``; refuse arbitrary pickles with an explanation."""
    import torch

    with open(path, "rb") as f:
        head = f.read(2)
    # torch.save writes a ZIP archive (since torch 1.6) or, in the legacy format, a pickle stream
    # (protocol 2+ starts with byte 0x80); anything else is not a torch file and must not reach the
    # unpickler, whose complaint about it ("invalid load key") reads like a refused pickle.
    if not zipfile.is_zipfile(path) and not head.startswith(b"\x80"):
        raise InputError(f"{path}: is not a PyTorch weights file (neither a torch.save ZIP archive nor a "
                         "legacy pickle); give the file written by torch.save(model.state_dict(), ...)")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputError(
            f"{path}: refused to load: the file holds pickled Python objects, not only tensors "
            f"({_pickle_reason(err)}). Unpickling can run arbitrary code, so only weights_only "
            "state dicts are read; save model.state_dict() instead, or export a .pt2") from None
    except Exception as err:  # noqa: BLE001 - corrupt zip, truncated file, not a torch file
        raise InputError(f"{path}: cannot be read as PyTorch weights ({first_line(err)}); "
                         "the file may be corrupt or not a torch.save file") from None
    if isinstance(data, dict):
        for key in ("state_dict", "model_state_dict", "model", "network", "net"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not data or not all(hasattr(v, "shape") for v in data.values()):
        raise InputError(f"{path}: does not hold a state dict (a dict of tensor names to tensors)")
    return strip_prefix(dict(data))


def load_weights(module, path) -> None:
    """Load a state dict file (``weights_only=True``, never a pickle of code) into ``module``, strictly."""
    path = Path(path)
    load_state(module, read_state_dict(path), path)


def load_state(module, state: dict, path) -> None:
    """``module.load_state_dict(state, strict=True)``; a mismatch is an InputError naming the first
    missing and unexpected keys (``path`` names the weights file)."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        missing = [k for k in module.state_dict() if k not in state]
        unexpected = [k for k in state if k not in module.state_dict()]
        detail = f"missing {missing[:3]}, unexpected {unexpected[:3]}" if missing or unexpected else \
            first_line(err)
        raise InputError(f"{path}: the weights do not fit the architecture ({detail}); check --arch "
                         "and its kwargs (spatial_dims, in_channels, number of classes)") from None


def first_line(err: Exception) -> str:
    """The first non-empty line of an exception's message, shortened to 200 characters."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return _quote(lines[0] if lines else type(err).__name__, 200)


def _pickle_reason(err: Exception) -> str:
    """The line of torch's weights_only refusal that names what was refused (without ANSI colours)."""
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(err).splitlines()]
    named = [line for line in lines if "WeightsUnpickler error" in line or "Unsupported global" in line]
    return _quote((named or [line for line in lines if line] or [type(err).__name__])[0], 160)


def _quote(text: str, limit: int) -> str:
    """``text`` shortened to at most ``limit`` characters at a word boundary, with '…' when cut."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:") + "…"
