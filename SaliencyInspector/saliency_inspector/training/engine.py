"""The one training loop, shared by the manifest trainer (:mod:`.loop`) and the demo recipe
(:mod:`.demo_recipe`): deterministic torch settings, Adam with a cosine-annealed rate, and
:func:`fit`, whose batches and epoch ends are the recipe's (loss terms, augmentation, validation,
early stopping). Deterministic on CPU for a given seed, torch version and thread count.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np


@contextmanager
def deterministic_torch(threads=None, warn_only=False):
    """torch on ``threads`` CPU threads (None/0: torch's setting) with deterministic algorithms
    (``warn_only``: warn instead of failing where CUDA has none); both settings restored on exit."""
    import torch

    threads_before, deterministic_before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    if threads:
        torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    try:
        yield
    finally:
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(deterministic_before)


def adam_with_cosine(model, learning_rate, steps, slow=(), slow_learning_rate=None):
    """(optimizer, schedule): Adam at ``learning_rate`` with the rate cosine-annealed to 0 over
    ``steps`` steps; the parameters in ``slow`` (e.g. a head initialised from an atlas) learn at
    ``slow_learning_rate`` instead."""
    import torch

    slow_ids = {id(p) for p in slow}
    if slow_ids:
        groups = [{"params": [p for p in model.parameters() if id(p) not in slow_ids], "lr": learning_rate},
                  {"params": list(slow), "lr": slow_learning_rate}]
    else:
        groups = model.parameters()
    optimizer = torch.optim.Adam(groups, lr=learning_rate)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)


def fit(model, n, epochs, batch_size, generator, optimizer, schedule, batch_loss, end_epoch) -> None:
    """The training loop: each epoch shuffles the ``n`` examples with the torch ``generator``; each
    batch of indices goes to ``batch_loss(idx)``, which returns (loss, *parts) as tensors (the recipe:
    augmentation, forward pass, loss terms), and the loss takes one optimizer and one schedule step.
    After each epoch ``end_epoch(epoch, means, started)`` gets the per-example means of the loss and
    its parts (float64) and the epoch's start time; it returns True to stop early."""
    import torch

    for epoch in range(int(epochs)):
        started = time.time()
        model.train()
        order = torch.randperm(n, generator=generator)
        sums = None
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            losses = batch_loss(idx)
            optimizer.zero_grad()
            losses[0].backward()
            optimizer.step()
            schedule.step()
            if sums is None:
                sums = np.zeros(len(losses))
            sums += np.array([value.item() for value in losses]) * len(idx)
        if end_epoch(epoch, sums / n, started):
            break
