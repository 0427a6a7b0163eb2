"""A module's plain attributes, put back as a snapshot of its ``__dict__`` held them.

Both ways shapetrace undoes what a forward did to a model's attributes use this: ``ModelGuard`` (names the
forward registered into, attributes its hooks recompute) and ``placement`` (every plain attribute of a model
run on another device, where a cache would keep that device's tensors); ``arguments`` puts the attributes of
the caller's objects back through ``put_back_entries``, the same rule without torch's names. What torch keeps in every module's
``__dict__`` (its registries, hook dicts, ``training``) is never a plain attribute: those have rules of their
own. The contents of the plain lists and dicts a module holds (``plain_containers``) go back through
``put_back_contents``, for ``placement`` and ``state_values`` alike.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from typing import Any

from torch import nn

__all__ = ["CONTAINERS", "TORCH_ATTRIBUTES", "changed_names", "plain_containers", "put_back_attributes", "put_back_contents", "put_back_entries", "same_contents"]

TORCH_ATTRIBUTES = frozenset(nn.Module().__dict__)
CONTAINERS = (list, dict)  # the plain containers whose contents are put back (exactly these types)
_ABSENT = object()  # "this name held nothing"


def changed_names(now: Mapping[str, Any], before: Mapping[str, Any]) -> list[str]:
    """The names whose object differs between two dicts (added, removed or replaced), by identity."""
    return [k for k in {**before, **now} if now.get(k, _ABSENT) is not before.get(k, _ABSENT)]


def put_back_entries(live: dict[str, Any], saved: Mapping[str, Any], names: Iterable[str] | None = None) -> None:
    """Give ``live`` (an object's ``__dict__``) back what ``saved`` (a copy of it) held, by identity: changed
    entries put back, new ones removed (only ``names``, when given; else every entry that changed). Written into
    the dict directly, so the object's ``__setattr__`` (a frozen dataclass's) does not run."""
    for k in changed_names(live, saved) if names is None else names:
        if k in saved:
            live[k] = saved[k]
        else:
            del live[k]


def put_back_attributes(live: dict[str, Any], saved: Mapping[str, Any], keep: Container[str] = ()) -> None:
    """Give ``live`` (a module's ``__dict__``) back the plain attributes ``saved`` (a copy of it) held: changed
    ones put back, new ones removed. Torch's own entries and the names in ``keep`` are left as they are."""
    put_back_entries(live, saved, [k for k in changed_names(live, saved) if k not in TORCH_ATTRIBUTES and k not in keep])


def plain_containers(attrs: Mapping[str, Any]) -> list[list | dict]:
    """The plain lists and dicts among a module's attributes (``attrs``, its ``__dict__``), torch's own left out."""
    return [v for k, v in attrs.items() if type(v) in CONTAINERS and k not in TORCH_ATTRIBUTES]


def same_contents(now: list | dict, before: list | dict) -> bool:
    """Whether ``now`` holds the very objects ``before`` (a shallow copy of it) held, in the same places."""
    if len(now) != len(before):
        return False
    if isinstance(now, dict):
        return all(k in before and now[k] is before[k] for k in now)  # type: ignore[index]
    return all(a is b for a, b in zip(now, before))


def put_back_contents(container: list | dict, items: list | dict) -> None:
    """Give ``container`` back the contents ``items`` (a shallow copy of it) held, in the same object."""
    if isinstance(container, dict):
        container.clear()
        container.update(items)  # type: ignore[arg-type]
    else:
        container[:] = items
