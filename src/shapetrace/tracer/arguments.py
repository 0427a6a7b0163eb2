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
``MAX_VALUES`` objects walked into within one argument are not noted. Dicts and lists are put back through the
base classes' own methods (an ``OrderedDict`` subclass may refuse ``update``, as transformers' ``ModelOutput``
does), order included; a put-back that fails anyway is warned about, it does not fail the trace.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import operator
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from .attributes import put_back_entries
from .cleanup import run_all_then_raise
from .user_warnings import warn_user

__all__ = ["MAX_DEPTH", "MAX_VALUES", "arguments_kept"]

# How deep the walk goes: (args, kwargs) -> args -> a cache -> its list of layers -> a layer -> its tensors is 5.
MAX_DEPTH = 8
# How many objects the walk goes into per argument (leaves cost nothing), so a list of a million dicts costs a
# bounded time and leaves the other arguments theirs.
MAX_VALUES = 100_000

_ABSENT = object()  # "this attribute was not set"
_LEAVES = (torch.Tensor, str, bytes, int, float, complex, bool, type(None), type, types.ModuleType,
           types.FunctionType, types.BuiltinFunctionType, types.MethodType, torch.nn.Module, torch.dtype,
           torch.device, frozenset, range, slice)
# The exact types of the leaves a long list is usually made of (token ids, lengths, names, tensors): a list of
# these alone holds nothing to walk into, which one C-speed pass over its items' types tells.
_PLAIN_LEAVES = frozenset({int, float, bool, str, bytes, type(None), torch.Tensor, torch.nn.Parameter})
# (args, kwargs) -> args -> an argument: from this depth down, each value has its own budget of MAX_VALUES.
_ARGUMENT_DEPTH = 2


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
    """What the walk noted: one step per container or object, putting back what it held.

    The walk is breadth-first, so an object reachable along several paths is noted where it is nearest the top
    (``MAX_DEPTH`` cuts no path that a shorter one reaches). Each argument has its own budget of ``MAX_VALUES``
    objects walked into, so a huge one (a list of a million small dicts) cannot use up the others'; leaves (a
    tensor, a number, a string) cost nothing, as they hold nothing to note.
    """

    def __init__(self) -> None:
        self.steps: list[Callable[[], None]] = []
        self.seen: set[int] = set()  # the objects walked into (not merely met: one cut off may be met again)
        self.budgets: dict[int, int] = {}  # per argument (its id): how many more objects may be walked into

    def walk(self, arguments: Any) -> None:
        """Note what ``arguments`` holds, and what the values inside it hold, ``MAX_DEPTH`` levels down at most."""
        queue: collections.deque[tuple[Any, int, int]] = collections.deque([(arguments, 0, id(arguments))])
        while queue:
            value, depth, branch = queue.popleft()
            if id(value) in self.seen:
                continue
            self.seen.add(id(value))
            inside = self._note(value)
            if depth >= MAX_DEPTH:
                continue
            for v in inside:
                if isinstance(v, _LEAVES) or id(v) in self.seen:
                    continue
                owner = id(v) if depth + 1 <= _ARGUMENT_DEPTH else branch
                left = self.budgets.get(owner, MAX_VALUES)
                if left <= 0:
                    break
                self.budgets[owner] = left - 1
                queue.append((v, depth + 1, owner))

    def _note(self, value: Any) -> Iterable[Any]:
        """Note what ``value`` holds (one step each for its items, its attributes, its slots); the values in it."""
        inside: list[Iterable[Any]] = []
        if isinstance(value, list):
            held = list.copy(value)
            self.steps.append(functools.partial(_put_back_list, value, held))
            if not set(map(type, held)) <= _PLAIN_LEAVES:
                inside.append(held)
        elif isinstance(value, collections.OrderedDict):  # its order lives beside the dict: read in that order
            pairs = list(collections.OrderedDict.items(value))
            self.steps.append(functools.partial(_put_back_ordered_dict, value, pairs))
            inside.append(v for _, v in pairs)
        elif isinstance(value, dict):
            copy = dict.copy(value)
            self.steps.append(functools.partial(_put_back_dict, value, copy))
            inside.append(dict.values(copy))
        elif isinstance(value, (set, tuple)):
            if isinstance(value, set):
                self.steps.append(functools.partial(_put_back_set, value, set(value)))
            inside.append(value)
        attributes = _instance_dict(value)
        if attributes is not None:
            self.steps.append(functools.partial(put_back_entries, attributes, dict(attributes)))
            inside.append(list(attributes.values()))
        slots = []
        for descriptor in _slot_descriptors(type(value)):
            held = _slot_value(descriptor, value)
            self.steps.append(functools.partial(_put_back_slot, descriptor, value, held))
            if held is not _ABSENT:
                slots.append(held)
        inside.append(slots)
        return itertools.chain.from_iterable(inside)


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
    if len(live) != len(held) or not all(map(operator.is_, live, held)):  # identities, at C speed
        list.__setitem__(live, slice(None), held)  # past a subclass's own __setitem__


def _same_items(live: Iterable[tuple[Any, Any]], held: list[tuple[Any, Any]] | Iterable[tuple[Any, Any]]) -> bool:
    """Whether two sequences of (key, value) hold the very same objects in the same order (no ``__eq__`` runs)."""
    ends = object()
    return all(a is c and b is d for (a, b), (c, d) in itertools.zip_longest(live, held, fillvalue=(ends, ends)))


def _put_back_dict(live: dict, held: dict) -> None:
    """Past a subclass's own methods (one may refuse ``update``); its ``__dict__`` is put back by its own step.

    ``held`` is a plain dict: refilling an emptied dict from it uses the hashes it stored, nothing of the keys
    runs, so nothing can stop the refill once the clear is done."""
    if not _same_items(dict.items(live), dict.items(held)):
        dict.clear(live)
        dict.update(live, held)


def _put_back_ordered_dict(live: collections.OrderedDict, held: list[tuple[Any, Any]]) -> None:
    """Through ``OrderedDict``'s own methods, not a subclass's (transformers' ``ModelOutput`` refuses
    ``update``, ``pop``, ``__delitem__`` and ``setdefault``), and never emptied first: the keys the forward
    added are taken out, the caller's values put back, then their order (``move_to_end``)."""
    base = collections.OrderedDict
    if _same_items(base.items(live), held):
        return
    keys = dict(held)
    for key in [k for k in base.keys(live) if k not in keys]:
        base.__delitem__(live, key)
    for key, v in held:
        if dict.get(live, key, _ABSENT) is not v:
            base.__setitem__(live, key, v)
    if not all(a is b for a, (b, _) in zip(base.keys(live), held)):
        for key, _ in held:
            base.move_to_end(live, key)


def _put_back_set(live: set, held: set) -> None:
    if live != held:
        set.clear(live)
        set.update(live, held)


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
    notes.walk(arguments)
    try:
        yield
    finally:
        failed: list[Exception] = []
        run_all_then_raise(functools.partial(_tried, step, failed) for step in notes.steps)
        if failed:
            warn_user(f"the forward stored into objects passed to it, and {len(failed)} of them could not be put back "
                      f"as they were (first: {type(failed[0]).__name__}: {failed[0]}); they may hold tensors on the "
                      f"traced device: give the next forward fresh ones (a new cache)")


def _tried(step: Callable[[], None], failed: list[Exception]) -> None:
    """Run one put-back step; an error in it is noted in ``failed``, not raised: a put-back that could not be
    done must not turn a trace that worked into a failure (an interrupt still stops the teardown's step)."""
    try:
        step()
    except Exception as e:  # noqa: BLE001 - said in one warning once all steps ran
        failed.append(e)
