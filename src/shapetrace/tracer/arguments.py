"""Put back what a forward stored into the objects its caller passed in, after a trace on another device.

A forward may keep state in an object it is given: a key/value cache (``cache.k = torch.cat([cache.k, new])``,
as transformers' ``DynamicCache`` does at every step), a list it appends to. Traced on another device (``meta``,
or a GPU for a model on the CPU), what it stores there are that device's tensors (on ``meta``: shapes without
values), and the caller's next real forward would trip over them ("Tensor on device cpu is not on the expected
device meta"). ``arguments_kept`` notes, before the forward, what every object reachable from the arguments
holds, and puts it back after it, raising or not: each changed attribute, list, dict and set holds the very
objects it held before.

References are noted and put back, never copied: a cache may hold gigabytes of tensors, and a copy would give
the forward other objects than the caller's (a forward may compare identities, or keep the object it got).
What this cannot undo: writes into the caller's tensors themselves (``cache.k.copy_(new)``, ``cache.k[:, i] =
new``). On ``meta`` a write of a ``meta`` result into a real tensor is refused (``shape_only``), and a write
computed from real values alone is the one the real forward would make. Containers other than lists, dicts
and sets (a ``deque``), modules passed as arguments, and objects past ``MAX_DEPTH`` levels or beyond the first
``MAX_VALUES`` values looked at are not noted.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .cleanup import run_all_then_raise

__all__ = ["MAX_DEPTH", "MAX_VALUES", "arguments_kept"]

# How deep the walk goes: (args, kwargs) -> args -> a cache -> its list of layers -> a layer -> its tensors is 5.
MAX_DEPTH = 8
# How many values the walk looks at in all, so that a list of a million token ids costs a bounded time.
MAX_VALUES = 100_000

_ABSENT = object()  # "this attribute was not set"
_LEAVES = (torch.Tensor, str, bytes, int, float, complex, bool, type(None), type, types.ModuleType,
           types.FunctionType, types.BuiltinFunctionType, types.MethodType, torch.nn.Module, torch.dtype,
           torch.device, frozenset, range, slice)


def _slot_descriptors(cls: type) -> list[Any]:
    """The descriptors of the ``__slots__`` of ``cls`` and its bases that hold values."""
    found = []
    for base in cls.__mro__:
        names = vars(base).get("__slots__", ())
        for name in (names,) if isinstance(names, str) else names:
            descriptor = vars(base).get(name)
            if isinstance(descriptor, types.MemberDescriptorType):
                found.append(descriptor)
    return found


class _Notes:
    """What the walk noted: one step per container or object, putting back what it held."""

    def __init__(self) -> None:
        self.steps: list[Callable[[], None]] = []
        self.seen: set[int] = set()
        self.budget = MAX_VALUES

    def walk(self, value: Any, depth: int) -> None:
        """Note what ``value`` holds, and what the values inside it hold, ``depth`` levels down at most."""
        if isinstance(value, _LEAVES) or depth > MAX_DEPTH or id(value) in self.seen or self.budget <= 0:
            return
        self.seen.add(id(value))
        inside: list[Any] = []
        if isinstance(value, list):
            self.steps.append(functools.partial(_put_back_list, value, list(value)))
            inside += value
        elif isinstance(value, dict):
            self.steps.append(functools.partial(_put_back_dict, value, dict(value)))
            inside += value.values()
        elif isinstance(value, (set, tuple)):
            if isinstance(value, set):
                self.steps.append(functools.partial(_put_back_set, value, set(value)))
            inside += value
        attributes = _instance_dict(value)
        if attributes is not None:
            self.steps.append(functools.partial(_put_back_attributes, attributes, dict(attributes)))
            inside += attributes.values()
        for descriptor in _slot_descriptors(type(value)):
            held = _slot_value(descriptor, value)
            self.steps.append(functools.partial(_put_back_slot, descriptor, value, held))
            if held is not _ABSENT:
                inside.append(held)
        for v in inside:
            self.budget -= 1
            if self.budget <= 0:
                return
            self.walk(v, depth + 1)


def _instance_dict(value: Any) -> dict | None:
    """The object's own ``__dict__`` (read past its ``__getattr__`` and properties), or ``None``."""
    if not type(value).__dictoffset__:
        return None
    try:
        attributes = object.__getattribute__(value, "__dict__")
    except Exception:  # noqa: BLE001 - an odd object without a readable dictionary: nothing noted
        return None
    return attributes if type(attributes) is dict else None


def _slot_value(descriptor: Any, value: Any) -> Any:
    try:
        return descriptor.__get__(value, type(value))
    except AttributeError:
        return _ABSENT


def _put_back_list(live: list, held: list) -> None:
    if len(live) != len(held) or any(a is not b for a, b in zip(live, held)):
        list.__setitem__(live, slice(None), held)  # past a subclass's own __setitem__


def _put_back_dict(live: dict, held: dict) -> None:
    if len(live) == len(held) and all(k in held and v is held[k] for k, v in dict.items(live)):
        return
    if isinstance(live, collections.OrderedDict):  # its order lives beside the dict: its own methods
        live.clear()
        live.update(held)
    else:  # past a subclass's own methods (transformers' ModelOutput refuses update); its __dict__ is put back too
        dict.clear(live)
        dict.update(live, held)


def _put_back_set(live: set, held: set) -> None:
    if live != held:
        set.clear(live)
        set.update(live, held)


def _put_back_attributes(live: dict, held: dict) -> None:
    """Written into the object's ``__dict__`` directly: its ``__setattr__`` (a frozen dataclass's) does not run."""
    for name in [k for k in live if k not in held]:
        del live[name]
    for name, v in held.items():
        if live.get(name, _ABSENT) is not v:
            live[name] = v


def _put_back_slot(descriptor: Any, value: Any, held: Any) -> None:
    now = _slot_value(descriptor, value)
    if now is held:
        return
    if held is _ABSENT:
        descriptor.__delete__(value)
    else:
        descriptor.__set__(value, held)


@contextlib.contextmanager
def arguments_kept(arguments: Any) -> Iterator[None]:
    """While the block runs, the objects reachable from ``arguments`` (the caller's, before any were moved) may
    change; after it, raising or not, every attribute, list, dict and set among them holds what it held before."""
    notes = _Notes()
    notes.walk(arguments, 0)
    try:
        yield
    finally:
        run_all_then_raise(notes.steps)
