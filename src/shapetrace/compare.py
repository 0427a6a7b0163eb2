"""Side-by-side checks of a shapetrace trace against torchinfo or torchview on the same model and inputs.

``diff_torchinfo`` and ``diff_torchview`` run the other tool live (the ``compare`` extra installs both),
align its layers with our calls, and return ``Difference`` records: plain data for
``shapetrace.renderers.diff``. Where the other tool is known to be wrong, the record says why, so a user
can tell a real disagreement from a known limitation.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from torch import nn

from .tracer.records import Comparison, Difference, Opaque, Struct, TensorMeta, Trace, Value, iter_tensors


def _shape(meta: Any) -> str:
    return "(" + ",".join(str(s) for s in meta.shape) + ")" if isinstance(meta, TensorMeta) else "—"


def _all_shapes(value: Any) -> str:
    shapes = [_shape(m) for _, m in iter_tensors(value)]
    return ", ".join(shapes) if shapes else "—"


class InputsNotPassable(ValueError):
    """The other tool cannot be given these inputs (a keyword input named like one of its own options)."""


def _input_data(tool: str, own: frozenset[str], args: tuple, kwargs: dict[str, Any]
                ) -> tuple[Any, dict[str, Any]]:
    """The forward's inputs as the other tool takes them: ``(input_data, keyword arguments)``.

    Keyword inputs alone go in ``input_data`` as a dict (both tools then call ``model(**input_data)``); beside
    positional ones they go to the tool as its own keyword arguments, which it passes on to the forward, so a
    name the tool uses itself (``own``) cannot be passed that way.
    """
    if not args and not kwargs:
        raise InputsNotPassable(f"{tool} runs the forward only when given an input, and this forward takes none: "
                                f"there is nothing to compare. Compare without --against {tool} (shapetrace trace "
                                "MODEL shows the shapes)")
    if not args:
        return dict(kwargs), {}
    clash = sorted(own & kwargs.keys())
    if clash:
        raise InputsNotPassable(f"{tool} cannot pass the keyword input {clash[0]!r} beside positional inputs: it takes "
                         f"that name as an option of its own. Give every input by keyword, or compare without "
                         f"--against {tool}")
    return list(args), dict(kwargs)


# Names of the tools' own parameters, which a forward keyword beside positional inputs would collide with.
_TORCHINFO_OWN = frozenset({"model", "x", "input_size", "input_data", "batch_dim", "cache_forward_pass", "col_names",
                            "col_width", "depth", "device", "dtypes", "mode", "row_settings", "verbose"})
_TORCHVIEW_OWN = frozenset({"model", "input_data", "input_size", "graph_name", "depth", "device", "dtypes", "mode",
                            "strict", "expand_nested", "graph_dir", "hide_module_functions",
                            "hide_inner_tensors", "roll", "show_shapes", "save_graph", "filename", "directory",
                            "collect_attributes"})


def _mode(model: nn.Module) -> str:
    """The model's mode, for the other tool (both put a model in eval unless told otherwise)."""
    return "train" if model.training else "eval"


def _names_by_module(model: nn.Module) -> dict[int, set[str]]:
    names: dict[int, set[str]] = defaultdict(set)
    for name, module in model.named_modules(remove_duplicate=False):
        names[id(module)].add(name)
    return names


def _nested_size(value: Value) -> tuple[int, ...]:
    """The size torchinfo reads from a value inside an output (its ``nested_list_size``): a tensor's shape; a
    list's, dict's or struct's first item's; ``()`` (its ``[]``) for anything else or an empty container."""
    if isinstance(value, TensorMeta):
        return tuple(value.shape)
    items = list(value.fields.values()) if isinstance(value, Struct) else (
        list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else [])
    return _nested_size(items[0]) if items else ()


def _what(value: Value) -> str:
    if isinstance(value, TensorMeta):
        return _shape(value)
    if isinstance(value, Opaque):
        return f"a {value.kind.rpartition('.')[2]}"
    if isinstance(value, Struct):
        return f"a {value.kind}"
    return "None" if value is None else f"a {type(value).__name__}"


def _torchinfo_reading(output: Value, theirs: tuple[int, ...]) -> str | None:
    """Why torchinfo reports ``theirs`` for this output, when its sizing rule gives exactly that.

    torchinfo sizes a module's output (``LayerInfo.calculate_size``) from one value: a dict's (a Hugging Face
    ModelOutput is one) last entry, a tuple's or list's first item, nested first items below that; a tensor
    there gives its shape, anything else ``[]``. A struct of ours is a ModelOutput (a dict) or a namedtuple
    (a tuple): both readings are tried. ``None`` when neither gives ``theirs`` (a real disagreement)."""
    if isinstance(output, (dict, Struct)):
        items = output.fields if isinstance(output, Struct) else output
        if items:
            key, last = list(items.items())[-1]
            if _nested_size(last) == theirs:
                kind = "a dict output (a Hugging Face ModelOutput is one)"
                held = "" if isinstance(last, TensorMeta) else f", {_what(last)}" + (", as []" if not theirs else "")
                return f"torchinfo sizes {kind} by its last entry alone: {key!r}{held}"
    if isinstance(output, (list, Struct)):
        items = list(output.fields.values()) if isinstance(output, Struct) else output
        if items and _nested_size(items[0]) == theirs:
            if isinstance(items[0], TensorMeta):
                return "torchinfo keeps only the first tensor of a sequence output"
            return (f"torchinfo sizes a sequence output by its first item alone: {_what(items[0])}"
                    + (", as []" if not theirs else ""))
    return None


def diff_torchinfo(model: nn.Module, trace: Trace, *args: Any, **kwargs: Any) -> Comparison:
    """Run ``torchinfo.summary`` on the same inputs and compare per call: output shape and parameters.

    torchinfo reports the first tensor of a sequence output only, and the last entry of a dict output (a Hugging
    Face ModelOutput) only (``_torchinfo_reading``), counts a parameter once per module that
    registers it, and puts hooks on every module (so ``nn.TransformerEncoderLayer`` leaves its fused fast
    path under torchinfo and sub-layers appear that do not run in eval).
    """
    import torchinfo  # noqa: PLC0415 - optional dependency (the `compare` extra)

    data, extra = _input_data("torchinfo", _TORCHINFO_OWN, args, kwargs)
    stats = torchinfo.summary(model, input_data=data, verbose=0, depth=1000, mode=_mode(model), **extra)
    names = _names_by_module(model)
    our_by_name: dict[str, list] = defaultdict(list)
    for call in trace.calls:
        our_by_name[call.module].append(call)
    seen: dict[int, int] = defaultdict(int)
    used: set[int] = set()
    diffs: list[Difference] = []
    matched = 0
    for layer in stats.summary_list:
        key = id(layer.module)
        k = seen[key]
        seen[key] += 1
        candidates = sorted({c.id for n in names.get(key, ()) for c in our_by_name.get(n, ())})
        ours = [trace.calls[i] for i in candidates if i not in used]
        label = (min(names.get(key, {'?'})) or '(root)') + (f"#{k}" if k else "")
        if not ours:
            if isinstance(layer.module, (nn.ModuleList, nn.ModuleDict)):
                diffs.append(Difference(label, "row", "container, never called", "listed as a layer",
                                        "torchinfo lists a ModuleList/ModuleDict each time its items run"))
            else:
                diffs.append(Difference(label, "call", "not called", "called",
                                        "torchinfo's per-module hooks can make a module take a slower path "
                                        "(a fused fast path is skipped when hooks are present)"))
            continue
        call = ours[0]
        used.add(call.id)
        matched += 1
        tensors = list(iter_tensors(call.outputs))
        first = tensors[0][1] if tensors else None
        theirs = tuple(layer.output_size) if layer.output_size else ()
        if first is not None and tuple(first.shape) != theirs:
            diffs.append(Difference(call.label, "output shape", _shape(first), str(list(theirs)),
                                    _torchinfo_reading(call.outputs, theirs) or "disagreement", call.id))
        elif len(tensors) > 1:
            diffs.append(Difference(call.label, "outputs", _all_shapes(call.outputs), str(list(theirs)),
                                    _torchinfo_reading(call.outputs, theirs)
                                    or "torchinfo keeps only the first tensor of a sequence output", call.id))
        if layer.num_params != call.params:
            why = ("torchinfo counts a parameter once per module registering it (shared or tied)"
                   if layer.num_params > call.params else "disagreement")
            diffs.append(Difference(call.label, "params", f"{call.params:,}", f"{layer.num_params:,}", why,
                                    call.id))
    for call in trace.calls:
        if call.id not in used:
            diffs.append(Difference(call.label, "call", "called", "not seen", "missing in torchinfo", call.id))
    if stats.total_params != trace.model.params:
        why = ("torchinfo counts shared and tied parameters once per registration"
               if trace.model.shared_params else "disagreement")
        diffs.append(Difference("(total)", "params", f"{trace.model.params:,}", f"{stats.total_params:,}", why))
    return Comparison("torchinfo", len(trace.calls), len(stats.summary_list), matched, diffs)


def _count_why(trace: Trace, cls: str, ours: int, theirs: int, unfed: list[str] | None = None) -> str:
    """Why torchview drew a (class, output shapes) pair a different number of times; ``unfed``: the names of
    our calls of that pair that nothing the forward was given reached (``_unfed_calls``)."""
    if unfed and ours - theirs <= len(unfed) and ours > theirs:
        return ("torchview draws no node for a module whose only input is a buffer or a tensor made inside the "
                f"forward (known limitation): {', '.join(unfed)}")
    if ours < theirs and any(u.cls == cls for u in trace.uncalled):
        return ("torchview's hooks make the enclosing layer leave its fused fast path, so it draws "
                "sub-layers that do not run in eval")
    if ours > theirs and cls in {u.cls for u in trace.uncalled} | {c.cls for c in trace.calls if c.parent is None}:
        return "a fused layer runs as one call here; torchview draws its sub-layers instead"
    return "different number of calls"


def _modules_with_submodules(trace: Trace, model: nn.Module | None = None) -> set[str]:
    """The names of the model's modules that have submodules, called or not (``""``: the root).

    From the model's own structure where it is given: every name a module has (a shared module has several:
    fastai's ``encoder`` is also ``encoder_dp.emb``), so a module whose only child is a shared module known to
    the trace by another name still counts as one with submodules. Without the model, from the trace's names."""
    if model is not None:
        return {name for name, m in model.named_modules(remove_duplicate=False) if next(m.children(), None) is not None}
    names = {c.module for c in trace.calls} | {u.module for u in trace.uncalled}
    names |= {alias for c in trace.calls for alias in c.aliases}
    return {n.rpartition(".")[0] for n in names if n}


def torchview_leaves(trace: Trace, model: nn.Module | None = None) -> list:
    """The calls torchview draws as module nodes: calls of modules without submodules (decided from
    ``model``'s structure where it is given, ``_modules_with_submodules``). A module with submodules that calls
    none of them (``nn.MultiheadAttention`` using its ``out_proj`` weights functionally, a ViT encoder layer,
    fastai's ``EmbeddingDropout``) is a leaf of our trace, but torchview expands every module with submodules
    into the functional ops it runs, so it draws no node for it; counting it would report a disagreement that
    is only a different definition of a leaf."""
    parents = _modules_with_submodules(trace, model)
    return [c for c in trace.leaves() if c.module not in parents and not parents.intersection(c.aliases)]


def _unfed_calls(trace: Trace) -> set[int]:
    """The calls that received no tensor from the forward's inputs or from another call (by the trace's data
    flow): fed only from a buffer (BERT's ``position_ids``, ``token_type_ids``) or a tensor made inside the
    forward. Empty when the trace did not follow the data (no edges): nothing can be told then."""
    if not trace.edges:
        return set()
    fed = {int(e.dst.partition(":")[2]) for e in trace.edges
           if not e.side and e.dst.startswith("call:") and e.src.partition(":")[0] in ("input", "call", "op")}
    return {c.id for c in trace.calls if c.id not in fed}


def diff_torchview(model: nn.Module, trace: Trace, *args: Any, **kwargs: Any) -> Comparison:
    """Run ``torchview.draw_graph`` and compare the leaf-module calls it drew: class and output shapes.

    Leaves are taken as torchview takes them on both sides (``torchview_leaves``: modules without
    submodules). torchview's module nodes carry a class name and shapes but no qualified name, and its node
    order is a graph walk rather than call order, so the comparison counts (class, output shapes) pairs on both
    sides and reports every pair whose count differs.
    """
    import torchview  # noqa: PLC0415 - optional dependency (the `compare` extra)

    data, extra = _input_data("torchview", _TORCHVIEW_OWN, args, kwargs)
    graph = torchview.draw_graph(model, input_data=data, depth=1000, expand_nested=True, mode=_mode(model), **extra)
    nodes: dict[str, Any] = {}
    for tail, head in graph.edge_list:
        for node in (tail, head):
            if type(node).__name__ == "ModuleNode":
                nodes.setdefault(node.node_id, node)
    theirs = Counter((n.name, tuple(tuple(s) for s in (n.output_shape or []))) for n in nodes.values())
    leaves = torchview_leaves(trace, model)
    calls_of: dict[tuple, list] = defaultdict(list)
    for c in leaves:
        calls_of[(c.cls, tuple(tuple(m.shape) for _, m in iter_tensors(c.outputs)))].append(c)
    ours = Counter({key: len(calls) for key, calls in calls_of.items()})
    unfed_ids = _unfed_calls(trace)
    diffs: list[Difference] = []
    for key in sorted(set(ours) | set(theirs), key=repr):
        if ours[key] != theirs[key]:
            cls, shapes = key
            unfed = [c for c in calls_of.get(key, []) if c.id in unfed_ids] if ours[key] > theirs[key] else []
            # the row names a call torchview left out where the data flow tells which, else the pair's first call
            call = (unfed or calls_of.get(key) or [None])[0]
            shape_text = ", ".join("(" + ",".join(map(str, s)) + ")" for s in shapes) or "—"
            why = _count_why(trace, cls, ours[key], theirs[key], [c.label for c in unfed])
            diffs.append(Difference(call.label if call else cls, f"{cls} calls with output {shape_text}",
                                    str(ours[key]), str(theirs[key]), why, call.id if call else None))
    matched = sum(min(ours[k], theirs[k]) for k in ours)
    return Comparison("torchview", len(leaves), sum(theirs.values()), matched, diffs)
