"""Helpers for the gallery tests that compare our models with numbers recorded from fastai 2.8.12."""

from __future__ import annotations

import collections
import hashlib

import torch
from torch import nn


def keys_digest(m: nn.Module) -> tuple[int, str]:
    """Number of state_dict entries and a short sha256 of the ordered ``"key (shape)"`` lines."""
    sd = m.state_dict()
    lines = "\n".join(f"{k} {tuple(v.shape)}" for k, v in sd.items())
    return len(sd), hashlib.sha256(lines.encode()).hexdigest()[:16]


def calls_per_class(m: nn.Module, *args, eval_mode: bool = True) -> dict[str, int]:
    """How many times modules of each class are called in one forward (fastai's shared ReLU counts per call).

    A model with a ``reset()`` (the AWD-LSTM) starts from a fresh hidden state; ``eval_mode`` puts the model
    in eval first.
    """
    counts: collections.Counter = collections.Counter()
    if hasattr(m, "reset"):
        m.reset()
    if eval_mode:
        m.eval()
    handle = torch.nn.modules.module.register_module_forward_pre_hook(lambda mod, a: counts.update([type(mod).__name__]))
    try:
        with torch.no_grad():
            m(*args)
    finally:
        handle.remove()
    return dict(counts)
