"""The model as the model-calling metrics see it: a batch of inputs -> the target's scores.

Batched ``per_forward`` at a time (the workflow sizes it from the memory cap,
``explainers.memory.batch_size``). A model exported with a fixed batch of 1 (``torch.export`` of
``(x,)``: the default) refuses larger batches with a shape-guard error; when the loader has marked
the model as static (``classifier.static_batch``, issue 24's detection) or the first larger batch
fails that way, batches of 1 are sent from then on, and ``note`` is told once.
"""

from __future__ import annotations

import numpy as np

_SHAPE_GUARD = ("shape[0]", "Expected input at", "batch")


def _is_batch_refusal(error: Exception) -> bool:
    text = str(error)
    return any(s in text for s in _SHAPE_GUARD)


def target_scores(classifier, target: int, per_forward: int = 8, note=None, probability: bool = False):
    """``predict(batch)``: numpy (B, C, *spatial) -> float64 (B,) scores of class ``target``: logits, or
    with ``probability`` the card's probabilities (``classifier.probabilities``: softmax or sigmoid).
    Quantus 0.6 uses probabilities for region perturbation, selectivity, IROF and monotonicity and
    logits for faithfulness correlation, completeness and the robustness metrics (each metric's
    ``softmax`` default in ``quantus/metrics/*/*.py``)."""
    import torch

    note = note or (lambda _m: None)
    state = {"per": 1 if getattr(classifier, "static_batch", False) else max(1, int(per_forward))}

    def predict(batch) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        out, i = [], 0
        while i < batch.shape[0]:
            n = state["per"]
            chunk = torch.from_numpy(batch[i:i + n])
            try:
                logits = classifier.predict(chunk)
            except RuntimeError as error:
                if n > 1 and chunk.shape[0] > 1 and _is_batch_refusal(error):
                    state["per"] = 1
                    note("the model accepts one input at a time (a static batch): sending batches of 1")
                    continue
                raise
            if probability:
                logits = classifier.probabilities(logits)
            out.append(logits[:, int(target)].detach().double().cpu().numpy())
            i += n
        return np.concatenate(out)

    predict.state = state
    return predict
