"""FLOPs per module call: ``FlopCounterMode`` snapshots, fused-kernel formulas and recurrent-layer formulas.

How a call's FLOPs are counted
------------------------------
The FLOP probe (``tracer.probes.flops.FlopProbe``) runs the forward under
``torch.utils.flop_counter.FlopCounterMode`` and reads its running total (``get_total_flops()``) at every
module call's start and end; the inclusive FLOPs of the call are the difference. This module holds the
formulas and the probe nothing but the reading.

``FlopCounterMode`` uses the convention of counting multiply-accumulates as 2 FLOPs for matmuls,
convolutions and attention, and 0 for elementwise work (bias adds, activations, normalisation). It counts 0
for a few ops that compute a lot; ``CUSTOM_FLOPS`` gives them formulas in the same convention:

* ``aten._scaled_dot_product_flash_attention_for_cpu`` (the CPU attention kernel): as PyTorch's own
  ``sdpa_flop_count``, ``4·B·H·Lq·Lk·d``;
* ``aten._native_multi_head_attention`` (``nn.MultiheadAttention``'s fast path): projections
  ``2·Nq·E·E + 2·2·Nk·E·E`` (q, then k and v), attention ``4·B·Lq·Lk·E``, output projection ``2·Nq·E·E``
  (``N`` = rows, i.e. batch × sequence);
* ``aten._transformer_encoder_layer_fwd`` (``nn.TransformerEncoderLayer``'s fast path): qkv ``2·N·E·3E``,
  attention ``4·B·L·L·E``, output projection ``2·N·E·E``, feed-forward ``2·N·E·F·2``.

Recurrent layers (``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` and their ``*Cell`` versions) run as one opaque op
(``mkldnn_rnn_layer`` on CPU, ``_cudnn_rnn`` on CUDA) that ``FlopCounterMode`` counts as 0, so their
count is *replaced* by the analytic formula of :func:`rnn_flops`, which also counts the elementwise work of
the cell (one FLOP per add, multiply or activation per element). The difference is added to every
enclosing call so inclusive counts stay consistent. With ``T·N`` (time step, batch row) pairs — for a
``PackedSequence`` the number of packed rows — ``H`` the hidden size, ``I`` the layer's input size, ``R``
the size of the recurrent state fed back (``proj_size`` when set, else ``H``) and ``b`` 1 with biases, else
0, one layer and direction costs ``T·N`` times:

* LSTM: ``8·H·(I + R)`` (4 gates × ``2·I·H + 2·R·H``) ``+ 8·H·b`` (two bias vectors of 4H) ``+ 13·H``
  (4H to add the input and recurrent parts, 4H gate activations, 3H for ``c = f⊙c + i⊙g``, 2H for
  ``h = o⊙tanh(c)``) ``+ 2·H·P`` with a projection of size ``P``;
* GRU: ``6·H·(I + H)`` (3 gates) ``+ 6·H·b + 11·H`` (2H adds for r, z; 2H sigmoids; ``r⊙(W_hn h)``, its
  add and tanh, 3H; ``(1-z)⊙n + z⊙h``, 4H);
* RNN (tanh or relu): ``2·H·(I + H) + 2·H·b + 2·H`` (the add and the activation).

Layer ``l > 0`` has ``I = R·directions``. A ``*Cell`` is one layer, one direction, one time step.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .metrics import Note
from .records import Call

__all__ = ["CUSTOM_FLOPS", "merge_flops", "rnn_flops", "rnn_step_flops"]


def _prod(shape: Any) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _sdpa_cpu_flop(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
    """``(B, H, Lq, d) x (B, H, Lk, d)``: ``QK^T`` and ``AV``, ``2·B·H·Lq·Lk·d`` each."""
    *batch, lq, d = query
    lk = key[-2]
    dv = value[-1]
    b = _prod(batch)
    return 2 * b * lq * lk * d + 2 * b * lq * lk * dv


def _native_mha_flop(query: Any, key: Any, value: Any, embed_dim: int, num_head: int, *args: Any,
                     **kwargs: Any) -> int:
    e = int(embed_dim)
    nq, nk = _prod(query[:-1]), _prod(key[:-1])
    lq = query[-2] if len(query) >= 2 else 1
    lk = key[-2] if len(key) >= 2 else 1
    b = nq // max(lq, 1)
    return 2 * nq * e * e + 4 * nk * e * e + 4 * b * lq * lk * e + 2 * nq * e * e


def _transformer_layer_flop(src: Any, embed_dim: int, num_heads: int, qkv_weight: Any, qkv_bias: Any,  # noqa: PLR0913 - mirrors torch._transformer_encoder_layer_fwd's signature
                            proj_weight: Any, proj_bias: Any, use_gelu: Any, norm_first: Any, eps: Any,
                            norm_weight_1: Any, norm_bias_1: Any, norm_weight_2: Any, norm_bias_2: Any,
                            ffn_weight_1: Any, *args: Any, **kwargs: Any) -> int:
    e = int(embed_dim)
    f = int(ffn_weight_1[0])
    n = _prod(src[:-1])
    seq = src[-2] if len(src) >= 2 else 1
    b = n // max(seq, 1)
    return 2 * n * e * 3 * e + 4 * b * seq * seq * e + 2 * n * e * e + 4 * n * e * f


def _custom_flops() -> dict[Any, Callable[..., int]]:
    aten = torch.ops.aten
    table: dict[Any, Callable[..., int]] = {}
    for name, fn in [("_scaled_dot_product_flash_attention_for_cpu", _sdpa_cpu_flop),
                     ("_native_multi_head_attention", _native_mha_flop),
                     ("_transformer_encoder_layer_fwd", _transformer_layer_flop)]:
        op = getattr(aten, name, None)
        if op is not None:
            table[op] = fn
    return table


CUSTOM_FLOPS: dict[Any, Callable[..., int]] = _custom_flops()
"""``custom_mapping`` for ``FlopCounterMode``: fused ops it would otherwise count as 0."""

_RECURRENT = (nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell, nn.RNNCell)


def rnn_step_flops(kind: str, input_size: int, hidden_size: int, *, bias: bool = True, proj_size: int = 0) -> int:
    """FLOPs of one time step of one batch row through one layer and direction (see the module docstring).

    ``kind`` is ``"LSTM"``, ``"GRU"``, ``"RNN_TANH"`` or ``"RNN_RELU"``.
    """
    i, h, b = input_size, hidden_size, int(bias)
    if kind == "LSTM":
        r = proj_size or h
        return 8 * h * (i + r) + 8 * h * b + 13 * h + (2 * h * proj_size if proj_size else 0)
    if kind == "GRU":
        return 6 * h * (i + h) + 6 * h * b + 11 * h
    if kind in ("RNN_TANH", "RNN_RELU", "RNN"):
        return 2 * h * (i + h) + 2 * h * b + 2 * h
    raise ValueError(f"unknown recurrent kind {kind!r}")


def _rows(x: Any, input_size: int) -> int | None:
    """The number of (time step, batch row) pairs in a recurrent layer's input."""
    if isinstance(x, PackedSequence):
        return int(x.data.shape[0])
    if isinstance(x, torch.Tensor) and x.dim() >= 1 and input_size:
        return x.numel() // input_size
    return None


@functools.cache
def _forward_signature(cls: type) -> inspect.Signature:
    return inspect.signature(cls.forward)


def _recurrent_input(module: nn.Module, args: tuple, kwargs: dict | None) -> Any:
    """The ``input`` a recurrent module was called with, passed by position or by keyword (``None`` if unbound).

    The call's arguments are bound to the module's ``forward`` signature (``input, hx=None`` in torch); a
    subclass whose forward names its first parameter differently gives that parameter.
    """
    try:
        bound = _forward_signature(type(module)).bind(module, *args, **(kwargs or {}))
    except TypeError:
        return None
    if "input" in bound.arguments:
        return bound.arguments["input"]
    values = list(bound.arguments.values())
    return values[1] if len(values) > 1 else None


def rnn_flops(module: nn.Module, args: tuple, kwargs: dict | None = None) -> int | None:
    """The analytic FLOPs of one call of a recurrent module on ``args`` and ``kwargs`` (``None`` for other modules)."""
    if not isinstance(module, _RECURRENT):
        return None
    x = _recurrent_input(module, args, kwargs)
    if x is None:
        return None
    if isinstance(module, nn.RNNCellBase):
        kind = "LSTM" if isinstance(module, nn.LSTMCell) else "GRU" if isinstance(module, nn.GRUCell) else "RNN"
        rows = _rows(x, module.input_size)
        if rows is None:
            return None
        return rows * rnn_step_flops(kind, module.input_size, module.hidden_size, bias=module.bias)
    assert isinstance(module, nn.RNNBase)
    rows = _rows(x, module.input_size)
    if rows is None:
        return None
    kind = module.mode
    dirs = 2 if module.bidirectional else 1
    proj = getattr(module, "proj_size", 0) or 0
    out = proj or module.hidden_size
    total = 0
    for layer in range(module.num_layers):
        size = module.input_size if layer == 0 else out * dirs
        total += dirs * rows * rnn_step_flops(kind, size, module.hidden_size, bias=module.bias, proj_size=proj)
    return total


def merge_flops(calls: list[Call], results: dict[int, tuple[int, int | None]]) -> None:
    """Write the FLOP probe's ``{call id: (counted, analytic)}`` into ``Call.flops``.

    A recurrent call's analytic count replaces what ``FlopCounterMode`` counted, and the difference is added
    to every enclosing call so inclusive counts stay consistent; the call's notes say so.
    """
    by_id = {c.id: c for c in calls}
    for call in calls:
        got = results.get(call.id)
        if got is not None:
            call.flops = got[0]
    for call in calls:
        got = results.get(call.id)
        if got is None or got[1] is None or got[1] == got[0]:
            continue
        delta = got[1] - got[0]
        call.notes.append(Note("flops-analytic", count=got[0]))
        node: Call | None = call
        while node is not None:
            node.flops = (node.flops or 0) + delta
            node = by_id.get(node.parent) if node.parent is not None else None
