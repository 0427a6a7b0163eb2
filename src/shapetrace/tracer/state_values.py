"""``values_kept``: for ``profile()``, put back what its many forwards change *in place* in a model's plain state.

``placement.forward_state_kept`` puts back what a forward *assigns* on the model's modules (``self.h = ...``)
and the contents of their plain lists and dicts. A forward can also write into what those attributes hold: a
plain tensor counted in place (``self.steps += 1``), a list inside a dict appended to
(``self.log["seen"].append(...)``). One forward of ``trace()`` leaves that as calling the model would; the
dozens of ``profile()``'s would leave it dozens of steps on. So ``values_kept``, for ``profile()`` only:

* keeps a copy (``clone``) of every plain tensor attribute of every module (not its parameters or buffers, nor
  a plain attribute that is one of them: the guard puts buffers back, parameters are not written) and writes
  it back into the same tensor afterwards (``set_`` where its shape, dtype or device changed);
* keeps a shallow copy of every list and dict held one level down in a module's plain lists and dicts, and
  puts their contents back.

The lists and dicts are found and put back with ``placement``'s helpers (``attributes.plain_containers``,
``put_back_contents``). Not put back: tensors inside lists and dicts (written in place), objects of other kinds (their attributes),
containers nested deeper. Clones cost memory the size of those tensors, once per profile.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from .attributes import CONTAINERS, TORCH_ATTRIBUTES, plain_containers, put_back_contents

__all__ = ["values_kept", "write_back"]


def _nested(value: list | dict) -> list[list | dict]:
    """The lists and dicts held directly in ``value`` (a plain list or dict)."""
    items = value.values() if isinstance(value, dict) else value
    return [v for v in items if type(v) in CONTAINERS]


@torch.no_grad()
def write_back(tensor: torch.Tensor, saved: torch.Tensor) -> None:
    """``saved``'s values back into ``tensor``, where they are when its layout is the same, else its storage."""
    with torch.inference_mode() if tensor.is_inference() else contextlib.nullcontext():
        if tensor.shape == saved.shape and tensor.dtype == saved.dtype and tensor.device == saved.device:
            if not torch.equal(tensor, saved):
                tensor.copy_(saved)
        else:
            tensor.set_(saved)


@contextlib.contextmanager
def values_kept(model: nn.Module) -> Iterator[None]:
    """Put back the values of the model's plain tensor attributes and the contents of the lists and dicts one
    level down in its plain lists and dicts (module docstring)."""
    registered = {id(t) for t in model.parameters()} | {id(t) for t in model.buffers()}
    tensors: list[tuple[torch.Tensor, torch.Tensor]] = []
    contents: list[tuple[list | dict, list | dict]] = []
    with torch.no_grad():
        for m in model.modules():
            attrs = vars(m)
            for k, v in attrs.items():
                if k in TORCH_ATTRIBUTES:
                    continue
                if isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter) and id(v) not in registered:
                    with contextlib.suppress(RuntimeError, NotImplementedError):  # meta, nested: left
                        tensors.append((v, v.clone()))
            contents += [(c, c.copy()) for v in plain_containers(attrs) for c in _nested(v)]
    try:
        yield
    finally:
        for tensor, saved in tensors:
            with contextlib.suppress(RuntimeError, NotImplementedError):
                write_back(tensor, saved)
        for container, items in contents:
            put_back_contents(container, items)
