"""Run a model on another device (``meta``, ``cuda``) or dtype without moving it, and put it back.

``placed(model, device, dtype)`` swaps copies of every parameter and buffer, on ``device`` (floating ones cast
to ``dtype``), into the model's parameter and buffer dicts for the duration of a ``with`` block: the model's
own tensors are never touched, shared tensors stay shared (one copy each), and the originals are back in
place when the block ends, raising or not. The swap goes slot by slot, module by module, never through
dotted names (``torch.nn.utils.stateless`` splits those on the dots, which a module registered as
``self._modules["a.b"]`` breaks); plain attributes the forward sets on its modules (``WeightDropout``'s dropped-out
weights, a cache) are put back too, with the contents of their lists and dicts. On ``meta`` the copies cost no memory. ``place_inputs`` moves a forward's arguments the same
way; on ``meta`` integer and boolean tensors stay real, for forwards that read them (``shape_only``). This
is the only place in shapetrace that moves tensors between devices.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from .attributes import plain_containers, put_back_attributes, put_back_contents, same_contents
from .cleanup import run_all_then_raise
from .errors import UnsupportedModel
from .shape_only import keeps_values
from .values import map_tensors

__all__ = ["forward_state_kept", "model_device", "place_inputs", "placed", "runs_copies", "runs_elsewhere"]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without any)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _copies(model: nn.Module, device: torch.device, dtype: torch.dtype | None
            ) -> list[tuple[dict[str, Any], str, torch.Tensor]]:
    """Every parameter and buffer slot of ``model`` as ``(slot dict, name, copy)``, each tensor copied once.

    One entry per (module object, attribute): a module registered under two names (an embedding shared by
    an encoder and its dropout wrapper) is swapped once, or restoring it would put the copy back. A tensor
    shared by two modules (tied weights) gets one copy in both slots.
    """
    copies: dict[int, torch.Tensor] = {}
    out: list[tuple[dict[str, Any], str, torch.Tensor]] = []
    for prefix, m in model.named_modules():  # each module object once
        for slots in (m._parameters, m._buffers):
            for name, t in slots.items():
                if t is None:
                    continue
                if id(t) not in copies:
                    if t.is_meta and device.type != "meta":
                        raise UnsupportedModel(
                            f"the model's {'parameter' if slots is m._parameters else 'buffer'} "
                            f"{prefix + '.' if prefix else ''}{name} is on 'meta' (a shape without data), so the "
                            f"model cannot run on {device}: trace it with device='meta' (shapetrace trace --device meta; shapes "
                            "only), or give it "
                            "real weights first (model.to_empty(device=...), then load_state_dict)")
                    cast = dtype if dtype is not None and t.is_floating_point() else None
                    c = t.detach().to(device=device, dtype=cast)
                    c.requires_grad_(t.requires_grad)
                    copies[id(t)] = c
                out.append((slots, name, copies[id(t)]))
    return out


@contextlib.contextmanager
def _swapped(copies: list[tuple[dict[str, Any], str, torch.Tensor]]) -> Iterator[None]:
    """Each slot holds its copy while the block runs; the original is back afterwards, raising or not."""
    put_back: list[Callable[[], object]] = []  # one step per slot: each runs even if one before it raised
    try:
        for slots, name, copy in copies:
            put_back.append(functools.partial(slots.__setitem__, name, slots[name]))
            slots[name] = copy
        yield
    finally:
        run_all_then_raise(reversed(put_back))


def _registered_names(attrs: dict[str, Any]) -> set[str]:
    """The names in the parameter, buffer and module registries of a module's ``__dict__``. Read through
    ``keys()``: a TorchScript module's registries are mappings whose iteration asks for items by position."""
    names: set[str] = set()
    for registry in ("_parameters", "_buffers", "_modules"):
        names.update((attrs.get(registry) or {}).keys())
    return names


@contextlib.contextmanager
def _attributes_kept(model: nn.Module) -> Iterator[None]:
    """Put back the plain attributes a forward sets on its modules (not parameters or buffers), and the contents
    of their lists and dicts.

    A forward on another device leaves tensors of that device behind in them: ``WeightDropout`` assigns the
    dropped-out LSTM weights (and the LSTM's ``_flat_weights``) at every call, a rotary embedding fills a cache
    that starts as ``self.cached = None`` or ``self.table = {}``; the next plain forward would read meta tensors.
    A name the forward registered (a layer built into ``self.head = None``) is left to ``ModelGuard``.
    """
    saved = []
    for m in model.modules():
        attrs = vars(m).copy()
        contents = [(v, v.copy()) for v in plain_containers(attrs)]
        saved.append((m, attrs, contents))
    try:
        yield
    finally:
        for m, attrs, contents in saved:
            live = vars(m)
            put_back_attributes(live, attrs, keep=_registered_names(live))
            for v, items in contents:
                if not same_contents(v, items):
                    put_back_contents(v, items)


@contextlib.contextmanager
def forward_state_kept(model: nn.Module) -> Iterator[None]:
    """Put back what forwards store on the model outside its parameters and buffers: its modules' plain
    attributes (a hidden state kept between calls, a counter, a cache) with their lists' and dicts' contents.
    ``placed`` does it for a forward run elsewhere; ``profile()`` does it on the model's own device too, as its
    many forwards are measurements, not the caller's. (``parametrize``'s cache of computed weights is put back
    by ``ModelGuard``, around every forward a trace runs, on every device.)"""
    with _attributes_kept(model):
        yield


@contextlib.contextmanager
def placed(model: nn.Module, device: torch.device | None, dtype: torch.dtype | None = None, *,
           keep_state: bool = True) -> Iterator[None]:
    """Run ``model`` with its tensors on ``device`` (``None``: where they are) and cast to ``dtype``, unmoved.
    ``keep_state=False``: the caller keeps the forward's state itself (``forward_state_kept`` around this)."""
    if dtype is None and (device is None or model_device(model) == device):
        yield
        return
    moved = _copies(model, device if device is not None else model_device(model), dtype)
    with forward_state_kept(model) if keep_state else contextlib.nullcontext(), _swapped(moved):
        yield


def runs_copies(model: nn.Module, device: torch.device | None,
                dtype: torch.dtype | None = None) -> Callable[[torch.Tensor], bool] | None:
    """Which of ``model``'s tensors ``placed(model, device, dtype)`` runs a copy of instead: a test that is
    true only for a tensor certainly copied (on another device, or cast), or ``None`` where ``placed`` runs
    the model's own tensors. The forward cannot write those it runs copies of: nothing to save for them."""
    if dtype is None and (device is None or model_device(model) == device):
        return None
    target = device if device is not None else model_device(model)

    def copied(t: torch.Tensor) -> bool:
        here = t.device
        # ``cuda`` without an index is the current device: a tensor on some CUDA device may be left where it is
        elsewhere = here.type != target.type or (target.index is not None and here.index != target.index)
        return elsewhere or (dtype is not None and t.is_floating_point() and t.dtype != dtype)

    return copied


def runs_elsewhere(model: nn.Module, device: torch.device | None, dtype: torch.dtype | None = None) -> bool:
    """Whether ``placed(model, device, dtype)`` runs the model elsewhere than it is: on ``meta`` (shapes only)
    always, else where it runs copies of the model's tensors (on another device, or cast). What such a forward
    stores into the objects it is given are tensors the caller's next real forward cannot use: ``trace()``
    and ``profile()`` put those objects back (``arguments.arguments_kept``)."""
    return (device is not None and device.type == "meta") or runs_copies(model, device, dtype) is not None


def place_inputs(value: Any, device: torch.device | None, dtype: torch.dtype | None = None) -> Any:
    """A copy of a forward's arguments with every tensor on ``device`` (floating ones cast to ``dtype``);
    tensors already there are not copied. On ``meta`` (shape-only tracing) integer and boolean tensors stay
    where they are: token ids, masks and lengths keep their values for forwards that read them."""
    if device is None and dtype is None:
        return value
    keep = device is not None and device.type == "meta"

    def move(t: torch.Tensor) -> torch.Tensor:
        if keep and keeps_values(t):
            return t
        if t.is_meta and not keep and device is not None:
            raise UnsupportedModel(
                f"an input of shape {tuple(t.shape)} is on 'meta' (a shape without data), but the model runs on "
                f"{device}: pass real inputs (torch.randn(...)), or trace with device='meta' (--device meta) for shapes only")
        if dtype is not None and t.is_floating_point():
            return t.to(device=device, dtype=dtype)
        return t.to(device) if device is not None else t

    return map_tensors(value, move)
