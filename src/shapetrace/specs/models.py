"""Model specs -> ``nn.Module``: what ``shapetrace trace MODEL`` accepts as MODEL.

A spec is one of:

* a gallery exhibit name (``shapetrace gallery list``), with its example inputs;
* ``package.module:attr`` -- ``attr`` (dotted for nested attributes) is an ``nn.Module`` instance, used as
  is, or a callable (a class or factory function) called with the ``--arg KEY=VALUE`` keyword arguments;
* ``path/to/file.py:attr`` -- the same, from a Python file (its folder is put on ``sys.path`` while it loads);
* a torchvision model: ``torchvision.models:resnet50`` or just ``resnet50``; always built with
  ``weights=None`` (random weights, nothing downloaded) unless ``--arg weights=...`` says otherwise, and
  with ``weights_backbone=None`` too where the builder takes one (detection and segmentation models);
  ``torchvision.models:VisionTransformer`` and ``torchvision.models.resnet:ResNet`` name classes, built with
  the ``--arg`` values alone.
  Classification models get a default input of ``1,3,224,224``.

``--arg`` values are Python literals (``num_classes=10``, ``layers=[2,2]``, ``name='x'``); anything that is
not a literal is passed as the raw string with the spaces around it stripped (``act=relu`` and ``act= relu``
give ``"relu"``; quote a string that needs them: ``act="' relu'"``). ``true``, ``false``, ``none`` and
``null`` in any case other than Python's own are refused: as strings they would all be true
(``bias=false`` would build a layer with a bias), so the error says to write ``False`` (or quote it).
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision.models as tvm
from torch import nn

from ..gallery.exhibits import exhibit_names, get_exhibit
from .exits import FactoryExited
from .inputs import make_inputs
from .names import names_a_file, path_problem, split_spec
from .raised import where_raised

__all__ = ["LoadedModel", "ModelSpecError", "load_model", "locate_model", "parse_arg", "parse_args"]


class ModelSpecError(ValueError):
    """A model spec (or ``--arg``) that cannot be turned into a module; the message says what to fix."""


@dataclass
class LoadedModel:
    """The module, its default forward inputs ``(args, kwargs)`` (``None`` when unknown) and its exhibit."""

    module: nn.Module
    inputs: tuple[tuple, dict] | None = None
    exhibit: Any = None
    source: str = ""


# Other languages' spellings of Python's True, False and None: as raw strings they would all be true.
_LOOKALIKES = {"true": "True", "false": "False", "none": "None", "null": "None"}


def parse_arg(text: str, option: str = "--arg") -> tuple[str, Any]:
    """``"KEY=VALUE"`` -> ``(key, value)``: the value parsed as a Python literal when it is one, else the
    string stripped of the spaces around it; ``ModelSpecError`` for ``true``/``false``/``none``/``null``
    spelt otherwise than Python spells them (see the module docstring). ``option``: the option the text was
    given with, as the message names it (``diff``'s ``--a-arg``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise ModelSpecError(f"bad {option} {text!r}: write KEY=VALUE with KEY a Python name, "
                             "e.g. --arg num_classes=10 or --arg layers=[2,2,2]")
    value = raw.strip()
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    meant = _LOOKALIKES.get(value.lower())
    if meant is not None:
        raise ModelSpecError(f"bad {option} {text!r}: {value!r} is not a Python literal, so it would be passed as "
                             f"the string {value!r}, which counts as true; write {key}={meant}, or "
                             f"{key}=\"'{value}'\" if the factory wants that string")
    return key, value


def parse_args(texts: Sequence[str], option: str = "--arg") -> dict[str, Any]:
    """Several ``KEY=VALUE`` into a dict; a key given twice is an error. ``option`` as for ``parse_arg``."""
    out: dict[str, Any] = {}
    for t in texts:
        k, v = parse_arg(t, option)
        if k in out:
            raise ModelSpecError(f"{option} {k} is given twice")
        out[k] = v
    return out


# Files a user may try as MODEL that hold weights or pickles: we never load them (unpickling runs code).
WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".safetensors", ".onnx")


def _closest(word: str, names: Sequence[str], n: int = 3) -> str:
    close = difflib.get_close_matches(word, list(names), n=n, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _squashed(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(".", "")


def _close_names(word: str, names: Sequence[str], n: int = 3) -> list[str]:
    """Names close to ``word``, counting ``resnet-34``, ``ResNet_34`` and ``resnet34`` as the same."""
    same = [m for m in names if _squashed(m) == _squashed(word)]
    close = difflib.get_close_matches(_squashed(word), [_squashed(m) for m in names], n=n, cutoff=0.75)
    by_squashed = {_squashed(m): m for m in names}
    return list(dict.fromkeys([*same, *(by_squashed[c] for c in close)]))[:n]


def _raised(what: str, error: BaseException) -> str:
    return (f"{what} raised {type(error).__name__}: {error} (at {where_raised(error)}; rerun with --debug for the "
            "whole traceback)")


def _torchvision_classifiers() -> list[str]:
    return sorted(tvm.list_models(module=tvm))


def _torchvision_all() -> list[str]:
    return sorted(tvm.list_models())


def _resolve_attr(obj: Any, dotted: str, where: str) -> Any:
    """``where``'s attribute ``dotted`` (``a.b.c``); a missing one is named with the object that lacks it
    (``'models.py:build' has no attribute 'nope'``, not ``'models.py'``)."""
    done: list[str] = []
    for part in dotted.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = [n for n in dir(obj) if not n.startswith("_")]
            owner = f"{where}:{'.'.join(done)}" if done else where
            raise ModelSpecError(f"{owner!r} has no attribute {part!r}.{_closest(part, names)}") from None
        done.append(part)
    return obj


def _check_file(path: Path) -> None:
    """Refuse a MODEL file that cannot be read as named (``ModelSpecError``)."""
    problem = path_problem(path)
    if problem is not None:
        raise ModelSpecError(f"cannot read {str(path)!r}: {problem} (MODEL is path/to/file.py:factory)")
    if path.is_dir():
        raise ModelSpecError(_folder_message(str(path)))
    if not path.is_file():
        raise ModelSpecError(f"no such file: {str(path)!r} (MODEL is path/to/file.py:factory)")


def _folder_message(where: str) -> str:
    """What to say when MODEL names a folder (as ``render`` does for a folder given as its trace file)."""
    return (f"{where!r} is a folder; give a Python file and the factory in it (path/to/file.py:factory), or a "
            "package's module as package.module:factory")


def _names_folder(spec: str) -> bool:
    return path_problem(spec) is None and Path(spec).is_dir()  # a name too long for a file is no folder


def _import_file(path: Path) -> Any:
    _check_file(path)
    # A name from the path that is the same in every process (hash() of a str is not: a saved trace's source
    # keys hold it, so the same model and inputs must give the same file).
    name = f"_shapetrace_user_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelSpecError(f"cannot import {str(path)!r} as a Python file")
    module = importlib.util.module_from_spec(spec)
    # The file's folder goes first on sys.path, and stays there, as for `python file.py`: the file, its
    # factory and its forward may import the modules beside it, the last two only when they run.
    folder = str(path.resolve().parent)
    if folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # any error in the user's file: a message saying where
        sys.modules.pop(name, None)
        raise ModelSpecError(_raised(f"importing {str(path)!r}", e)) from e
    return module


def _import_module(name: str) -> Any:
    # The current folder is searched, as `python -m shapetrace` does and the `shapetrace` script would not.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        missing = e.name or name
        if missing == name or name.startswith(missing + "."):
            raise ModelSpecError(f"cannot import module {name!r} ({e}). Is it installed, and is the name "
                                 "spelt right? A file is written path/to/file.py:factory.") from e
        raise ModelSpecError(f"importing {name!r} failed: {e}") from e
    except Exception as e:  # any error in the user's module: a message saying where
        raise ModelSpecError(_raised(f"importing {name!r}", e)) from e


def _instantiate(obj: Any, kwargs: dict[str, Any], what: str) -> nn.Module:
    """The module ``obj`` is or builds; a ``SystemExit`` on the way is a ``FactoryExited`` (same code)."""
    try:
        return _built(obj, kwargs, what)
    except SystemExit as e:
        raise FactoryExited(e.code) from e


def _built(obj: Any, kwargs: dict[str, Any], what: str) -> nn.Module:
    if isinstance(obj, nn.Module):
        if kwargs:
            raise ModelSpecError(f"{what} is already a module instance, so --arg ({', '.join(kwargs)}) cannot "
                                 "apply; point MODEL at a class or factory function instead")
        return obj
    if not callable(obj):
        raise ModelSpecError(f"{what} is {_a(type(obj).__name__)}, not an nn.Module or a callable that builds one")
    try:
        built = obj(**kwargs)
    except TypeError as e:
        if len(traceback.extract_tb(e.__traceback__)) <= 1:  # the call itself: wrong or missing arguments
            raise ModelSpecError(f"calling {what}({_fmt_kwargs(kwargs)}) failed: {e}. Check the --arg names.") \
                from e
        raise ModelSpecError(_raised(f"calling {what}({_fmt_kwargs(kwargs)})", e)) from e
    except Exception as e:  # any error in the user's factory: a message saying where
        raise ModelSpecError(_raised(f"calling {what}({_fmt_kwargs(kwargs)})", e)) from e
    if not isinstance(built, nn.Module):
        raise ModelSpecError(f"{what}({_fmt_kwargs(kwargs)}) returned {_a(type(built).__name__)}, not an nn.Module")
    return built


def _a(kind: str) -> str:
    """``kind`` with its article: ``a list``, ``an int``."""
    return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"


def _fmt_kwargs(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _without_downloads(builder: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with ``weights=None`` and ``weights_backbone=None`` added where ``builder`` takes them and
    ``--arg`` does not set them: torchvision would download pretrained weights otherwise."""
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return kwargs
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for name in ("weights", "weights_backbone"):
        if name not in kwargs and (name in params or (takes_any and name == "weights")):
            kwargs = {**kwargs, name: None}
    return kwargs


def _torchvision(name: str, kwargs: dict[str, Any]) -> LoadedModel:
    try:
        builder = tvm.get_model_builder(name)
    except ValueError as e:
        obj = getattr(tvm, name.split(".")[0], None)
        if obj is not None:  # a class or a module of torchvision.models, not a registered builder
            obj = _resolve_attr(tvm, name, "torchvision.models")
            label = f"torchvision.models:{name}"
            return LoadedModel(_instantiate(obj, _without_downloads(obj, kwargs), label), None, None, label)
        raise ModelSpecError(f"torchvision has no model {name!r}.{_closest(name, _torchvision_all())}") from e
    kwargs = _without_downloads(builder, kwargs)
    module = _instantiate(builder, kwargs, f"torchvision.models.{name}")
    inputs = None
    if name in _torchvision_classifiers() or name in tvm.list_models(module=tvm.quantization):
        gen = torch.Generator().manual_seed(0)
        size = 299 if name.endswith("inception_v3") else 224
        inputs = ((torch.randn(1, 3, size, size, generator=gen),), {})
    return LoadedModel(module, inputs, None, f"torchvision.models:{name}")


def load_model(spec: str, kwargs: dict[str, Any] | None = None) -> LoadedModel:
    """Resolve a model spec (see the module docstring) into a ``LoadedModel``; ``ModelSpecError`` if it can't."""
    return locate_model(spec)(dict(kwargs or {}))


def locate_model(spec: str) -> Callable[[dict[str, Any]], LoadedModel]:
    """What can be told of a model spec without running the model's code (no import of its file or module,
    no factory called): ``ModelSpecError`` for a spec that cannot name a model (unknown names, a missing file);
    else the function that builds it from the factory's keyword arguments (``load_model``). ``diff`` checks
    both of its specs so before building either."""
    spec = spec.strip()
    if not spec:
        raise ModelSpecError("MODEL is empty: give a gallery exhibit name, package.module:factory, "
                             "path/to/file.py:factory or a torchvision model name such as resnet18")
    parts = split_spec(spec)
    if parts is not None:
        where, attr = parts
        if not where:
            raise ModelSpecError(f"{spec!r} names no module or file before ':': write package.module:{attr or 'factory'} "
                                 f"or path/to/file.py:{attr or 'factory'}")
        if not attr:
            raise ModelSpecError(f"{spec!r} names no attribute after ':' (e.g. mypkg.models:build_model)")
        if names_a_file(where):
            _check_file(Path(where))
            return lambda kwargs: _from_module(_import_file(Path(where)), where, attr, kwargs)
        if where in ("torchvision.models", "torchvision"):
            return lambda kwargs: _torchvision(attr, kwargs)
        return lambda kwargs: _from_module(_import_module(where), where, attr, kwargs)
    if spec.endswith(".py") and not _names_folder(spec):
        raise ModelSpecError(f"{spec!r} is a file: also name the factory or module in it, as {spec}:build_model")
    if spec.lower().endswith(WEIGHT_SUFFIXES):
        raise ModelSpecError(_weights_file_message(spec))
    if spec.lower().endswith(".json"):  # lines and diff read saved traces before MODEL specs are resolved
        raise ModelSpecError(f"{spec!r} names a saved trace, not a model: show it with 'shapetrace render {spec}' "
                             "(or lines, diff), or give MODEL as a spec to trace")
    if spec in exhibit_names():
        return lambda kwargs: _exhibit(spec, kwargs)
    if spec in _torchvision_all():
        return lambda kwargs: _torchvision(spec, kwargs)
    if _names_folder(spec):
        raise ModelSpecError(_folder_message(spec))
    is_path = path_problem(spec) is None and Path(spec).exists()  # a name too long for a file is no file
    if "." in spec and not is_path:
        where, _, attr = spec.rpartition(".")
        raise ModelSpecError(f"unknown model {spec!r}. To name an attribute of a module write {where}:{attr}")
    if is_path:
        raise ModelSpecError(f"{spec!r} is a file, but not a Python file: MODEL names a gallery exhibit, a "
                             "torchvision model, package.module:factory or path/to/file.py:factory")
    raise ModelSpecError(f"unknown model {spec!r}: not a gallery exhibit nor a torchvision model.{_hint(spec)} "
                         "Run 'shapetrace gallery list' for the exhibits; other models are named "
                         "package.module:factory or path/to/file.py:factory.")


def _from_module(module: Any, where: str, attr: str, kwargs: dict[str, Any]) -> LoadedModel:
    """The model ``attr`` of an imported file or module builds (or is)."""
    label = f"{where}:{attr}"
    obj = _resolve_attr(module, attr, where)
    if where.startswith("torchvision.models") and callable(obj) and not isinstance(obj, nn.Module):
        kwargs = _without_downloads(obj, kwargs)
    return LoadedModel(_instantiate(obj, kwargs, label), None, None, label)


def _exhibit(name: str, kwargs: dict[str, Any]) -> LoadedModel:
    ex = get_exhibit(name)
    module = _instantiate(ex.build, kwargs, f"exhibit {name!r}")
    return LoadedModel(module, ex.inputs(), ex, f"exhibit:{name}")


def _hint(spec: str) -> str:
    """Close gallery exhibits and close torchvision models, each named as such."""
    exhibits = _close_names(spec, exhibit_names())
    vision = _close_names(spec, _torchvision_all())
    found = [f"{e!r} (an exhibit)" for e in exhibits] + [f"{v!r} (torchvision)" for v in vision]
    if not found:
        return ""
    return f" Did you mean {', '.join(found[:-1]) + ' or ' + found[-1] if len(found) > 1 else found[0]}?"


def _weights_file_message(spec: str) -> str:
    return (f"{spec!r} looks like a file of weights or a pickle. shapetrace never loads such files (unpickling "
            "can run any code). Write a small Python file that builds the model and loads the weights you "
            "trust, and point MODEL at its factory, e.g. build.py:build with\n"
            "    def build():\n        model = MyNet()\n"
            f"        model.load_state_dict(torch.load({spec!r}, weights_only=True))\n        return model\n"
            "Shapes do not depend on the weights: random weights trace the same (omit the load).")


def _input_example(loaded: LoadedModel) -> str:
    """An ``--input`` that suits the model, where its kind says (torchvision's video and optical-flow models)."""
    name = loaded.source.rpartition(":")[2]
    if name in tvm.list_models(module=tvm.video):
        return "--input 1,3,16,112,112 (a clip: batch, channels, frames, height, width)"
    if name in tvm.list_models(module=tvm.optical_flow):
        return "--input 1,3,224,224 --input 1,3,224,224 (two frames)"
    return "--input 1,3,224,224"


def _takes_no_inputs(module: nn.Module) -> bool:
    """Whether ``module.forward`` can be called with no arguments (every parameter has a default)."""
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


def load_model_and_inputs(spec: str, input_specs: Sequence[str] = (), arg_texts: Sequence[str] = (),
                          device: str | None = None) -> tuple[LoadedModel, tuple, dict]:
    """The model ``spec`` names (built with the ``KEY=VALUE`` texts of ``arg_texts``) and ``(args, kwargs)``
    to run it on: from ``input_specs`` (the ``--input`` language) or else the model's default inputs.

    Raises ``ModelSpecError`` or ``InputSpecError`` saying what to fix.
    """
    loaded = load_model(spec, parse_args(arg_texts))
    if input_specs:
        args, kwargs = make_inputs(input_specs, device=device)
    elif loaded.inputs is not None:
        args, kwargs = loaded.inputs
    elif _takes_no_inputs(loaded.module):
        args, kwargs = (), {}
    else:
        raise ModelSpecError(f"{spec!r} has no default inputs: give one with --input, e.g. {_input_example(loaded)} "
                             "(see shapetrace trace --help)")
    return loaded, args, kwargs

