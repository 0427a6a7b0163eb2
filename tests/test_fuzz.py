"""Random models, traced: every recorded shape is the value the forward really returned.

``hypothesis`` builds random networks from the pieces real models are made of (nested ``Sequential``,
``ModuleList`` and ``ModuleDict``; convolutions, linear layers, norms, activations, pooling; residual adds,
concatenations; a submodule called twice; tuple and dict outputs; a module that raises at a chosen call).
For every example:

* each call's recorded output shapes equal those torch's own per-module forward hooks saw in a separate,
  untraced run of the same model (an oracle independent of shapetrace's global hooks);
* a raising model yields ``TraceFailed`` with a partial trace whose failing call is the raising module;
* the model is unchanged (parameters, buffers, training flags, hooks, grad mode);
* the trace survives a JSON round trip, and every renderer produces valid output: tables as text,
  Markdown, CSV and HTML (parsed), diagrams as DOT and SVG (parsed as XML).

``make test`` runs a bounded number of examples; ``make fuzz`` runs many more
(``SHAPETRACE_FUZZ_EXAMPLES``, default 25 here).
"""

from __future__ import annotations

import html.parser
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import shapetrace
from shapetrace.tracer.records import TensorMeta, Trace, iter_tensors

EXAMPLES = int(os.environ.get("SHAPETRACE_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("SHAPETRACE_FUZZ_SEED") is None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---- the pieces random models are built from -------------------------------------------------------------
class Boom(RuntimeError):
    """The error a ``Raiser`` raises: tests tell it apart from any other failure."""


class Raiser(nn.Module):
    """Passes its input through, and raises on its ``at``-th call (0-based)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, self.calls = self.calls, self.calls + 1
        if n == self.at:
            raise Boom(f"raised on call {n}")
        return x


class Residual(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Concat(nn.Module):
    """Two branches on the same input, joined along the channel/feature dimension."""

    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x)], dim=1)


class Twice(nn.Module):
    """Calls the same submodule twice (shape preserving), so it has call_index 0 and 1."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.body(x))


class Looped(nn.Module):
    """A ``ModuleList`` applied in a loop."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class Routed(nn.Module):
    """A ``ModuleDict`` whose entries run in key order."""

    def __init__(self, layers: dict[str, nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleDict(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for key in self.layers:
            x = self.layers[key](x)
        return x


class TupleOut(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x.mean(dim=1)


class DictOut(nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": x, "pooled": x.flatten(1).sum(dim=1, keepdim=True)}


class Net(nn.Module):
    """The random model: a body, then an optional structured output head."""

    def __init__(self, body: nn.Module, head: nn.Module | None) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x: torch.Tensor):
        x = self.body(x)
        return self.head(x) if self.head is not None else x


# ---- strategies ----------------------------------------------------------------------------------------
@dataclass
class State:
    """The shape flowing through the model being built: (C, H, W) for images, (F,) for features."""

    dims: tuple[int, ...]

    @property
    def image(self) -> bool:
        return len(self.dims) == 3


@st.composite
def leaf(draw: st.DrawFn, s: State) -> nn.Module:
    """One layer that fits ``s`` (updating it in place)."""
    if s.image:
        c, h, w = s.dims
        kind = draw(st.sampled_from(["conv", "conv1", "bn", "relu", "pool", "gap"] if min(h, w) >= 2
                                    else ["conv", "conv1", "bn", "relu", "gap"]))
        if kind in ("conv", "conv1"):
            out = draw(st.integers(1, 6))
            s.dims = (out, h, w)
            return nn.Conv2d(c, out, 3, padding=1) if kind == "conv" else nn.Conv2d(c, out, 1)
        if kind == "bn":
            return nn.BatchNorm2d(c)
        if kind == "relu":
            return nn.ReLU()
        if kind == "pool":
            s.dims = (c, h // 2, w // 2)
            return nn.MaxPool2d(2)
        s.dims = (c,)
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    (f,) = s.dims
    kind = draw(st.sampled_from(["linear", "ln", "gelu", "dropout"]))
    if kind == "linear":
        out = draw(st.integers(1, 8))
        s.dims = (out,)
        return nn.Linear(f, out)
    if kind == "ln":
        return nn.LayerNorm(f)
    return nn.GELU() if kind == "gelu" else nn.Dropout(0.1)


def _preserving(s: State) -> nn.Module:
    """A shape-preserving layer for ``s`` (for residuals and modules called twice)."""
    return nn.Conv2d(s.dims[0], s.dims[0], 1) if s.image else nn.Linear(s.dims[0], s.dims[0])


@st.composite
def block(draw: st.DrawFn, s: State, depth: int) -> nn.Module:
    """A layer or a container of layers, possibly nested, that fits ``s``."""
    kinds = ["leaf"] if depth <= 0 else ["leaf", "seq", "list", "dict", "residual", "concat", "twice"]
    kind = draw(st.sampled_from(kinds))
    if kind == "leaf":
        return draw(leaf(s))
    if kind in ("seq", "list", "dict"):
        parts = [draw(block(s, depth - 1)) for _ in range(draw(st.integers(1, 3)))]
        if kind == "seq":
            return nn.Sequential(*parts)
        if kind == "list":
            return Looped(parts)
        return Routed({f"k{i}": p for i, p in enumerate(parts)})
    if kind == "residual":
        return Residual(nn.Sequential(_preserving(s), nn.ReLU()))
    if kind == "twice":
        return Twice(_preserving(s))
    before = State(s.dims)
    a = draw(block(before, depth - 1))
    other = State(s.dims)
    b = draw(block(other, depth - 1))
    if before.image != other.image or before.dims[1:] != other.dims[1:]:
        s.dims = before.dims
        return a  # branches that cannot be joined: keep one
    s.dims = (before.dims[0] + other.dims[0], *before.dims[1:])
    return Concat(a, b)


@dataclass
class Example:
    model: Net
    x: torch.Tensor
    raiser: str | None  # qualified name of the Raiser that will raise, if any
    train: bool


@st.composite
def examples(draw: st.DrawFn) -> Example:
    image = draw(st.booleans())
    batch = draw(st.integers(1, 3))
    s = State((draw(st.integers(1, 4)), draw(st.integers(1, 9)), draw(st.integers(1, 9))) if image
              else (draw(st.integers(1, 8)),))
    shape = (batch, *s.dims)
    parts = [draw(block(s, draw(st.integers(0, 3)))) for _ in range(draw(st.integers(1, 4)))]
    raiser = None
    if draw(st.booleans()):
        pos = draw(st.integers(0, len(parts)))
        parts.insert(pos, Raiser(at=0))
        raiser = f"body.{pos}"
    head = draw(st.sampled_from([None, "tuple", "dict"]))
    model = Net(nn.Sequential(*parts), {"tuple": TupleOut(), "dict": DictOut(), None: None}[head])
    torch.manual_seed(draw(st.integers(0, 2**16)))
    return Example(model, torch.randn(shape), raiser, draw(st.booleans()))


# ---- the oracle and the checks ---------------------------------------------------------------------------
def _shapes(value) -> list[tuple[int, ...]]:
    """Every tensor shape in a torch value tree, in order."""
    if isinstance(value, torch.Tensor):
        return [tuple(value.shape)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _shapes(v)]
    if isinstance(value, dict):
        return [s for k in value for s in _shapes(value[k])]
    return []


def _recorded_shapes(value) -> list[tuple[int, ...]]:
    return [tuple(m.shape) for _, m in iter_tensors(value) if isinstance(m, TensorMeta)]


@dataclass
class Oracle:
    """What torch's own per-module hooks saw on an untraced run."""

    outputs: dict[tuple[str, int], list[tuple[int, ...]]]  # (module, call index) -> output shapes
    failed_in: str | None  # the innermost module whose forward raised, if one did
    error: BaseException | None


def torch_hook_run(model: nn.Module, x: torch.Tensor) -> Oracle:
    """Output shapes of every completed module call, from per-module hooks on an untraced run."""
    seen: dict[tuple[str, int], list[tuple[int, ...]]] = {}
    counts: dict[str, int] = {}
    open_calls: list[str] = []
    handles = []
    for name, m in model.named_modules():
        def pre(mod, args, name=name):
            open_calls.append(name)

        def post(mod, args, out, name=name):
            open_calls.pop()
            n = counts.get(name, 0)
            counts[name] = n + 1
            seen[(name, n)] = _shapes(out)
        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    error = None
    try:
        with torch.no_grad():
            model(x)
    except Exception as e:  # noqa: BLE001 - any failure of a random model is an outcome to compare
        error = e
    finally:
        for h in handles:
            h.remove()
    return Oracle(seen, open_calls[-1] if error is not None and open_calls else None, error)


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()],
        "global": (len(torch.nn.modules.module._global_forward_hooks),
                   len(torch.nn.modules.module._global_forward_pre_hooks)),
        "grad": torch.is_grad_enabled(),
    }


def _assert_unchanged(before: dict, model: nn.Module) -> None:
    after = _snapshot(model)
    assert after["training"] == before["training"]
    assert after["hooks"] == before["hooks"]
    assert after["global"] == before["global"]
    assert after["grad"] == before["grad"]
    assert after["state"].keys() == before["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), f"{k} changed"


def _reset_raisers(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, Raiser):
            m.calls = 0


class _StrictHTML(html.parser.HTMLParser):
    """Fails on a closing tag that does not match the open one (void elements aside)."""

    VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
                      "wbr", "path", "polygon", "ellipse", "polyline", "circle", "rect", "line", "stop"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()


def check_html(text: str) -> None:
    parser = _StrictHTML()
    parser.feed(text)
    parser.close()
    assert parser.stack == [], f"unclosed tags: {parser.stack}"


def render_everything(trace: Trace) -> None:
    """Every table format and both diagram formats render, and parse where they have a grammar."""
    from shapetrace.renderers import diagram, table

    for fmt in ("text", "md", "csv"):
        out = table.render(trace, fmt)
        assert isinstance(out, str) and out.strip()
    check_html(table.render(trace, "html"))
    dot = diagram.render(trace, format="dot")
    dot = dot.decode() if isinstance(dot, bytes) else dot
    assert dot.lstrip().startswith(("digraph", "strict digraph"))
    if shutil.which("dot"):
        svg = diagram.render(trace, format="svg")
        ET.fromstring(svg.encode() if isinstance(svg, str) else svg)


# ---- the property ---------------------------------------------------------------------------------------
@FUZZ
@given(examples())
def test_random_models_trace_what_torch_returns(ex: Example) -> None:
    model = ex.model.train(ex.train)
    oracle = torch_hook_run(model, ex.x)
    if ex.raiser is not None:
        assert isinstance(oracle.error, Boom)
    _reset_raisers(model)
    before = _snapshot(model)
    if oracle.error is None:
        trace = shapetrace.trace(model, ex.x, ops=True)
    else:  # the raiser, or the model itself (BatchNorm training on one value per channel, ...)
        with pytest.raises(shapetrace.TraceFailed) as info:
            shapetrace.trace(model, ex.x, ops=True)
        trace = info.value.trace
        failed = trace.failed_call
        assert failed is not None and failed.module == oracle.failed_in, "the failing call is the raising module"
        assert str(oracle.error) in (failed.error or "")
    _reset_raisers(model)
    _assert_unchanged(before, model)

    completed = {(c.module, c.call_index): c for c in trace.calls if c.error is None}
    assert completed.keys() == oracle.outputs.keys(), "the same calls completed, traced and untraced"
    for key, shapes in oracle.outputs.items():
        assert _recorded_shapes(completed[key].outputs) == shapes, f"outputs of {key}"

    assert Trace.from_json(trace.to_json()) == trace
    render_everything(trace)
