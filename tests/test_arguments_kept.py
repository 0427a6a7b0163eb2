"""``arguments_kept`` puts back what a forward stored into the caller's objects: through the base classes' own
methods (an ``OrderedDict`` subclass that refuses ``update``, as transformers' ``ModelOutput`` does), order
included, for every argument however long another one is, and without failing a trace that worked."""

from __future__ import annotations

import collections
import warnings

import pytest
import torch
from torch import nn

import shapetrace
from shapetrace.tracer import arguments
from shapetrace.tracer.arguments import MAX_DEPTH, arguments_kept


class Refused(Exception):
    """What transformers' ``ModelOutput`` raises (a plain ``Exception`` there)."""


class ModelOutput(collections.OrderedDict):
    """Refuses what transformers' ``ModelOutput`` refuses (transformers/utils/generic.py)."""

    def __delitem__(self, *a, **k):
        raise Refused(f"You cannot use ``__delitem__`` on a {type(self).__name__} instance.")

    def setdefault(self, *a, **k):
        raise Refused(f"You cannot use ``setdefault`` on a {type(self).__name__} instance.")

    def pop(self, *a, **k):
        raise Refused(f"You cannot use ``pop`` on a {type(self).__name__} instance.")

    def update(self, *a, **k):
        raise Refused(f"You cannot use ``update`` on a {type(self).__name__} instance.")


class Cache:
    def __init__(self) -> None:
        self.k = None
        self.layers: list = []


class Stores(nn.Module):
    """Stores its result into the mapping it is given, as a forward keeping state does."""

    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, state) -> torch.Tensor:
        y = self.l(x)
        state["last_hidden"] = y
        state["added"] = y
        return y


def test_a_model_output_that_refuses_update_is_put_back_and_the_trace_works():
    state = ModelOutput()
    state["last_hidden"] = None
    state["other"] = 1
    shapetrace.trace(Stores(), torch.randn(2, 4), state, device="meta")
    assert list(state.items()) == [("last_hidden", None), ("other", 1)]


def test_an_ordered_dict_whose_order_alone_changed_is_put_back_in_its_order():
    od = collections.OrderedDict(a=1, b=2, c=3)
    with arguments_kept(((od,), {})):
        od.move_to_end("a")
    assert list(od) == ["a", "b", "c"]


def test_a_model_output_whose_keys_and_order_changed_keeps_its_values_and_order():
    state = ModelOutput(a=1, b=2)
    before = dict(state)
    with arguments_kept(((state,), {})):
        collections.OrderedDict.__delitem__(state, "a")
        state["c"] = 3
        state["a"] = 4
    assert list(state.items()) == list(before.items())


def test_a_plain_dict_whose_order_alone_changed_is_put_back_in_its_order():
    d = {"a": 1, "b": 2}
    with arguments_kept(((d,), {})):
        d["a"] = d.pop("a")
    assert list(d) == ["a", "b"]


def test_a_put_back_that_fails_warns_and_does_not_fail_the_block(monkeypatch):
    def refuses(live, held):
        raise TypeError("cannot")

    monkeypatch.setattr(arguments, "_put_back_list", refuses)
    cache = Cache()
    kept = arguments_kept(((cache.layers, cache), {}))
    kept.__enter__()
    cache.layers.append(1)
    cache.k = 1
    with pytest.warns(shapetrace.ShapetraceWarning, match="could not be put back"):
        kept.__exit__(None, None, None)
    assert cache.k is None  # the other steps still ran


def test_a_long_list_of_token_ids_does_not_use_up_the_budget_of_a_later_argument():
    cache = Cache()
    with arguments_kept(((list(range(arguments.MAX_VALUES + 10)), cache), {})):
        cache.k = 1
    assert cache.k is None


def test_one_huge_argument_does_not_starve_the_arguments_after_it(monkeypatch):
    monkeypatch.setattr(arguments, "MAX_VALUES", 20)
    many = [{"i": i} for i in range(100)]
    cache = Cache()
    with arguments_kept(((many,), {"cache": cache})):
        cache.layers.append("meta tensor")
        cache.k = 1
    assert cache.layers == [] and cache.k is None


def test_an_object_met_first_at_max_depth_is_walked_where_it_is_nearer_the_top():
    cache = Cache()
    deep = cache
    for _ in range(MAX_DEPTH - 2):
        deep = [deep]
    with arguments_kept(((deep, cache), {})):
        cache.layers.append("meta tensor")
    assert cache.layers == []


def test_a_list_of_plain_leaves_whose_items_are_replaced_is_put_back():
    ids = [1, 2, 3]
    first = ids[0]
    with arguments_kept(((ids,), {})):
        ids[0] = torch.empty(1, device="meta")
    assert ids == [1, 2, 3] and ids[0] is first


def test_a_dict_inside_a_list_of_numbers_is_walked():
    inner: dict = {}
    mixed = [1, 2.0, inner]
    with arguments_kept(((mixed,), {})):
        inner["k"] = 1
    assert inner == {}


def test_nothing_is_warned_when_everything_is_put_back():
    d = {"a": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with arguments_kept(((d,), {})):
            d["b"] = 2
    assert d == {"a": 1}
