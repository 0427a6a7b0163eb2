"""``torch.nn.utils.parametrize``'s state that lives outside a module's registries, kept as a trace found it.

Three pieces, all read by ``ModelGuard``:

- the cache of computed weights (``parametrize._cache``), filled inside ``with parametrize.cached():``. A
  forward under the trace's ``torch.no_grad()`` caches a weight without autograd history (and one on
  ``meta``, a weight made from copies), which the caller's next forward in the same ``cached()`` block would
  read instead of computing its own: no gradient for the parametrization's originals. ``cache_found`` and
  ``put_back_cache`` give back the very entries found.
- the hooks torch's reparametrizations register on a module (``prune``, ``weight_norm`` and ``spectral_norm``
  forward pre-hooks, their and ``parametrizations``' state-dict hooks): ``reparametrization_hook`` tells them
  from anyone else's, so the guard takes back only
  those a forward added, and gives back only those it removed.
- the properties on the class parametrize makes for each parametrized module (``ParametrizedLinear``, one
  property per parametrized tensor). Removing a parametrization deletes its property from that class, adding
  one adds a property to it: a module whose registries and class the guard puts back gets properties that
  match its parametrizations again (``match_properties``).
"""

from __future__ import annotations

import importlib
from types import FunctionType, MethodType
from typing import Any

from torch import nn
from torch.nn.utils import parametrize, prune

from .attributes import put_back_contents, same_contents

__all__ = ["cache_found", "match_properties", "put_back_cache", "reparametrization_hook"]

# Where torch's reparametrizations define the hooks they register on a module (forward pre-hooks, state-dict hooks)
_REPARAMETRIZATION_MODULES = frozenset(f"torch.nn.utils.{m}" for m in (
    "prune", "weight_norm", "spectral_norm", "parametrize", "parametrizations"))


# torch's own hook classes, a user's subclass included (a pruning method of one's own, as torch's tutorial writes)
_REPARAMETRIZATION_CLASSES = tuple(c for c in (
    getattr(prune, "BasePruningMethod", None),
    getattr(importlib.import_module("torch.nn.utils.weight_norm"), "WeightNorm", None),
    *(getattr(importlib.import_module("torch.nn.utils.spectral_norm"), n, None)
      for n in ("SpectralNorm", "SpectralNormStateDictHook", "SpectralNormLoadStateDictPreHook")))
    if isinstance(c, type))


def reparametrization_hook(hook: Any) -> bool:
    """Whether ``hook`` (a value of a module's hook dict) is one torch's ``prune``, ``weight_norm``,
    ``spectral_norm`` or ``parametrizations`` registered: an object of their classes (a user's pruning method,
    subclassing torch's, included), or a function or object defined there (torch may wrap a state-dict hook in an
    object holding it as ``hook``)."""
    inner = getattr(hook, "hook", hook)
    if isinstance(inner, _REPARAMETRIZATION_CLASSES):
        return True
    owner = inner if isinstance(inner, (FunctionType, MethodType)) else type(inner)
    return getattr(owner, "__module__", None) in _REPARAMETRIZATION_MODULES


def _cache() -> dict | None:
    cache = getattr(parametrize, "_cache", None)
    return cache if isinstance(cache, dict) else None


def cache_found() -> dict[Any, Any] | None:
    """A shallow copy of parametrize's cache (``None`` where this torch has none): references, nothing computed."""
    cache = _cache()
    return dict(cache) if cache is not None else None


def put_back_cache(saved: dict[Any, Any] | None) -> None:
    """Give parametrize's cache back the entries ``saved`` (from ``cache_found``) held, and only those."""
    cache = _cache()
    if saved is None or cache is None or (not cache and not saved):
        return
    if not same_contents(cache, saved):
        put_back_contents(cache, saved)


def _generated(cls: type) -> bool:
    """Whether ``cls`` is a class parametrize made for one module (``Parametrized<Base>``, with the
    ``__getstate__`` parametrize writes into it, which refuses pickling): every property in its own ``__dict__`` is
    one parametrize put there. A user's class of that name is not (its ``__getstate__`` is the user's)."""
    bases = cls.__bases__
    getstate = vars(cls).get("__getstate__")
    return (len(bases) == 1 and cls.__name__ == f"Parametrized{bases[0].__name__}"
            and getattr(getstate, "__module__", None) == parametrize.__name__)


def match_properties(module: nn.Module) -> None:
    """Give the class parametrize made for ``module`` one property per parametrized tensor, as its
    ``parametrizations`` say: a property added by the forward for a parametrization put back is removed, one
    the forward deleted (``remove_parametrizations``) is made again. Nothing for another module."""
    cls = type(module)
    if not _generated(cls):
        return
    held = module._modules.get("parametrizations")
    names = set(held.keys()) if isinstance(held, nn.ModuleDict) else set()
    for name in [k for k, v in vars(cls).items() if isinstance(v, property) and k not in names]:
        delattr(cls, name)
    inject = getattr(parametrize, "_inject_property", None)
    for name in names:
        if not isinstance(vars(cls).get(name), property) and inject is not None:
            inject(module, name)
