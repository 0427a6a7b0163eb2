"""``InputWrites``: for ``profile()``, the tensors its forwards are given start every run as they were given.

A forward may write into the tensors it is passed (``x.mul_(2)``, ``x.sub_(mean).div_(std)``, ``ids.clamp_(...)``).
One call does that once; ``profile()`` runs the forward dozens of times, and each run would start from what the
one before left (values doubling up to ``inf``, or shrinking to denormals, which changes how fast a CPU computes),
and the caller would get back tensors written dozens of times. So, for ``profile()`` only:

* during the shape pass (the first forward), a ``TorchDispatchMode`` looks at every operation that writes one of
  its arguments (its schema says so: ``mul_``, ``copy_``, ``index_put_``, an ``out=`` argument) and, before the
  first write into the storage of an input tensor, keeps a copy (``clone``) of that input. Inputs never written
  are never copied;
* before each later run (``restore``), an input whose version counter moved since it was last put back gets
  its values back from that copy, outside the timed spans; and after the profile, once more, so the caller's
  tensors come back as they were given.

Not put back: an input the shape pass did not write that a later run writes (a branch the shape pass did not
take: the first write is seen by no mode, and its values are gone), writes through ``.data`` (no version
counter moves), and tensors inside objects other than lists, tuples and dicts (``values.iter_live_tensors``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .state_values import write_back
from .values import iter_live_tensors

__all__ = ["InputWrites"]


def _version(t: torch.Tensor) -> int | None:
    try:
        return t._version
    except RuntimeError:  # an inference tensor keeps no version counter
        return None


def _storage_key(t: torch.Tensor) -> int | None:
    """What tells tensors sharing memory (a view of an input, the input itself): their storage's address."""
    try:
        return t.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError):  # a tensor without a storage (nested, a subclass): not watched
        return None


class _FirstWrites(TorchDispatchMode):
    """Keeps a copy of an input before the first operation that writes its storage (``InputWrites.watched``)."""

    def __init__(self, writes: InputWrites) -> None:
        super().__init__()
        self.writes = writes

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        schema = func._schema
        if schema.is_mutable and self.writes.unsaved:
            for i, a in enumerate(schema.arguments):
                if a.alias_info is None or not a.alias_info.is_write:
                    continue
                value = kwargs.get(a.name) if a.kwarg_only or i >= len(args) else args[i]
                for t in value if isinstance(value, (list, tuple)) else (value,):
                    if isinstance(t, torch.Tensor):
                        self.writes.save(_storage_key(t))
        return func(*args, **kwargs)


class InputWrites:
    """The input tensors of ``arguments`` (a forward's args and kwargs, as it gets them) and copies of those a
    forward writes (module docstring)."""

    def __init__(self, arguments: Any) -> None:
        by_storage: dict[int, list[torch.Tensor]] = {}
        seen: set[int] = set()
        for t in iter_live_tensors(arguments):
            if id(t) in seen or t.is_meta:  # a meta tensor holds no values to put back
                continue
            seen.add(id(t))
            key = _storage_key(t)
            if key is not None:
                by_storage.setdefault(key, []).append(t)
        self.unsaved = by_storage  # inputs by storage, until a write into that storage copies them
        self.saved: list[tuple[torch.Tensor, torch.Tensor, int | None]] = []  # (input, its copy, version when put back)

    def save(self, key: int | None) -> None:
        """Copy the inputs whose storage is ``key`` (a write into it is about to run), once."""
        tensors = self.unsaved.pop(key, None) if key is not None else None
        for t in tensors or ():
            with torch.no_grad(), contextlib.suppress(RuntimeError, NotImplementedError):  # one clone cannot copy: left
                self.saved.append((t, t.clone(), _version(t)))

    @contextlib.contextmanager
    def watched(self) -> Iterator[None]:
        """Copy each input before its first write while the block runs (nothing to watch: no mode entered)."""
        if not self.unsaved:
            yield
            return
        with _FirstWrites(self):
            yield

    def restore(self) -> None:
        """Put back the values of every copied input a forward wrote since it was last put back."""
        for i, (t, copy, version) in enumerate(self.saved):
            if version is None or _version(t) != version:  # no counter (an inference tensor): always
                with contextlib.suppress(RuntimeError, NotImplementedError):
                    write_back(t, copy)
                self.saved[i] = (t, copy, _version(t))
