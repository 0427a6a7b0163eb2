"""matplotlib plots of a trace: per-layer time bars, time against FLOPs, and the shape flow of a forward.

Every function takes a ``Trace`` (plain data; this module never imports torch) and returns SVG text
(``format="svg"``) or PNG bytes (``format="png"``). Figures are drawn on matplotlib's Agg canvas directly, so
the global backend is never switched, and SVG output is deterministic (``svg.hashsalt`` fixed, no date).

* ``time_bars``: self time per call, the largest first (``order="self"``) or in forward order
  (``order="forward"``), with each call's inclusive time as a faint bar behind it. Needs ``profile()``.
* ``time_vs_flops``: inclusive time against FLOPs for the leaf calls, log-log, with lines of constant
  throughput. Needs ``profile()`` with FLOPs.
* ``shape_flow``: channels and spatial size of each leaf call's output along the forward -- the U of a
  U-Net, the funnel of a classifier head. Needs only shapes, so it works on any trace.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..tracer.records import Call, TensorMeta, Trace, iter_tensors
from .rows import table_rows
from .units import (
    display_width,
    ellipsize_middle,
    escape_controls,
    fitting_end,
    format_percent,
    literal,
    markup,
    no_timings_reason,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(**kwargs: object) -> Figure:
    """A matplotlib figure on the Agg canvas (matplotlib is imported only when a figure is drawn: the shape
    flow's SVG, which the gallery draws for every exhibit, does without it)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - matplotlib loads on first plot
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib loads on first plot

    fig = Figure(dpi=_DPI, **kwargs)  # the dpi it is saved at: text measured while drawing is the text saved
    FigureCanvasAgg(fig)
    return fig

__all__ = ["PLOTS", "flow_points", "render_plot", "shape_flow", "time_bars", "time_vs_flops"]

_SALT = "shapetrace"
_DPI = 110
_PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974",
            "#64B5CD"]


def _save(fig: Figure, format: str) -> str | bytes:
    import matplotlib  # noqa: PLC0415 - matplotlib loads on first plot

    buf = io.BytesIO()
    fmt = format.lower()
    if fmt not in ("svg", "png"):
        raise ValueError(f"unknown plot format {format!r}; use svg or png")
    with matplotlib.rc_context({"svg.hashsalt": _SALT, "svg.fonttype": "path"}):
        meta = {"Date": None} if fmt == "svg" else {"Software": None}
        fig.savefig(buf, format=fmt, metadata=meta, bbox_inches="tight", dpi=_DPI)
    data = buf.getvalue()
    return data.decode("utf-8") if fmt == "svg" else data


def _text(text: str) -> str:
    """``text`` shown as written by matplotlib: control and bidirectional characters as Python escapes (as in
    every other picture), ``$`` escaped, so ``"cost $5"`` is not read as math text."""
    return escape_controls(str(text)).replace("$", r"\$")


def _timed(trace: Trace) -> list[Call]:
    calls = [c for c in trace.calls if c.timing]
    if not calls:
        raise ValueError(f"this trace has no timings: {no_timings_reason(trace)}")
    return calls


def _ms(call: Call, key: str) -> float:
    """``call``'s time ``key`` (``self_ms``, ``total_ms``), 0 when its timing lacks it (every key is optional)."""
    value = call.timing.get(key) if call.timing else None
    return value if isinstance(value, (int, float)) else 0.0


def _axis_end(value: float, room: float) -> float:
    """Where an axis ending at ``value`` stops with ``room`` to spare: ``value * room``, or ``value`` itself where
    that product overflows a float (a corrupt 1e308 ms), since matplotlib refuses an infinite limit."""
    end = value * room
    return end if math.isfinite(end) else value


def _model(trace: Trace) -> str:
    """The model's class for a default title: ``literal`` (no control or bidi character acts), cut past 60
    columns."""
    return ellipsize_middle(literal(trace.model.cls), 60)


def _end(text: str, width: int) -> str:
    """``text`` if it fits ``width`` display columns, else ``…`` and the longest end of it that fits beside that
    (``…layers.7.proj``): a wide (CJK) character takes two columns, as the label shows it."""
    return text if display_width(text) <= width else "…" + fitting_end(text, width - 1)


def _name(c: Call, width: int = 38) -> str:
    return _end(f"{literal(c.label)} ({literal(c.cls)})", width)


def _colours(classes: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for cls in classes:
        if cls not in out:
            out[cls] = _PALETTE[len(out) % len(_PALETTE)]
    return out


@dataclass
class _Bar:
    """One bar of ``time_bars``: a call, or in the modules view a module with its calls' times added."""

    name: str      # the y-axis label
    cls: str
    self_ms: float
    total_ms: float
    has_self: bool
    order: int     # forward order: the (first) call's id


def _call_bars(calls: list[Call]) -> list[_Bar]:
    return [_Bar(_name(c), c.cls, _ms(c, "self_ms"), _ms(c, "total_ms"), "self_ms" in c.timing, c.id) for c in calls]


def _module_bars(trace: Trace) -> list[_Bar]:
    """One bar per module, with the times its table row in the modules view has (self times added over its
    calls, inclusive times over its outermost calls), labelled with its call count."""
    bars = []
    for r in table_rows(trace, view="modules"):
        if r.timing is None:
            continue
        count = f", ×{r.calls}" if r.calls > 1 else ""
        text = f"{literal(r.name)} ({literal(r.cls)}{count})"
        name = _end(text, 38)
        self_ms = r.timing.self_ms
        bars.append(_Bar(name, r.cls, self_ms or 0.0, r.timing.total_ms or 0.0, self_ms is not None, r.first_call))
    return bars


def time_bars(trace: Trace, *, top: int = 25, order: str = "self", format: str = "svg",
              title: str | None = None, view: str = "calls") -> str | bytes:
    """Horizontal bars of self time (and faint inclusive time) for the ``top`` calls by self time.

    ``order="self"`` sorts them largest first; ``order="forward"`` keeps them in the order the forward ran
    them. ``view="modules"`` draws one bar per module instead, its calls' times added up as in the table's
    modules view (the label gives the call count). Percentages are of the root's inclusive time. The legend,
    outside the bars on the right, gives the self bar's colour of each class.
    """
    calls = _timed(trace)
    if order not in ("self", "forward"):
        raise ValueError("order must be 'self' or 'forward'")
    if view not in ("calls", "modules"):
        raise ValueError("view must be 'calls' or 'modules'")
    bars = _module_bars(trace) if view == "modules" else _call_bars(calls)
    chosen = sorted(bars, key=lambda b: (-b.self_ms, b.order))[:max(1, top)]
    if order == "forward":
        chosen.sort(key=lambda b: b.order)
    root = next((c for c in calls if c.parent is None), calls[0])
    whole = _ms(root, "total_ms") or 1.0
    colours = _colours([b.cls for b in chosen])
    fig = _figure(figsize=(8.5, 0.6 + 0.28 * len(chosen)))
    ax = fig.add_subplot()
    ys = list(range(len(chosen)))[::-1]
    ax.barh(ys, [b.total_ms for b in chosen], color=_INCLUSIVE, height=0.8)
    ax.barh(ys, [b.self_ms for b in chosen], color=[colours[b.cls] for b in chosen], height=0.55)
    for y, b in zip(ys, chosen):
        if b.has_self:
            ax.text(b.self_ms, y, f" {format_percent(100 * b.self_ms / whole)}%", va="center", fontsize=7)
    longest = max(max(b.total_ms, b.self_ms) for b in chosen)
    ax.set_xlim(0, _axis_end(longest or 1.0, 1.12))  # room for the percentage after the longest bar
    ax.set_yticks(ys, [_text(b.name) for b in chosen], fontsize=7)
    kind = (trace.timing or {}).get("kind") or root.timing.get("kind", "")
    ax.set_xlabel(f"time per forward (ms, {kind})")
    what = "largest" if order == "self" else "in forward order"
    noun = "modules" if view == "modules" else "calls"
    calls_text = f"{len(chosen)} slowest {noun}" if len(chosen) != 1 else f"slowest {noun[:-1]}"
    ax.set_title(_text(title or f"{_model(trace)}: self time of the {calls_text} ({what})"),
                 fontsize=9)
    _bars_legend(ax, colours)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, format)


_INCLUSIVE = "#dddddd"


def _bars_legend(ax: object, colours: dict[str, str]) -> None:
    """The bars' legend, outside the axes on the right (so it covers no bar or percentage): the inclusive
    bar, then the self bar's colour for each class."""
    from matplotlib.patches import Patch  # noqa: PLC0415 - matplotlib loads on first plot

    handles = [Patch(color=_INCLUSIVE, label="inclusive")]
    handles += [Patch(color=colour, label=_text(f"self: {literal(cls)}")) for cls, colour in colours.items()]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),  # type: ignore[attr-defined]
              borderaxespad=0.0)


def time_vs_flops(trace: Trace, *, format: str = "svg", label_top: int = 6, title: str | None = None) -> str | bytes:
    """Inclusive time against FLOPs of each leaf call (log-log), coloured by class, with iso-throughput lines.

    The ``label_top`` slowest calls are named; calls drawn on the same spot share one label, and a label that
    would cover another is moved up. Tick labels are plain numbers (``200k``, ``0.5``), thinned to 1-2-5 or
    powers of ten on a wide axis so they never run together.
    """
    leaves = {c.id for c in trace.leaves()}
    pts = [c for c in _timed(trace) if c.id in leaves and c.flops and _ms(c, "total_ms") > 0]
    fig = _figure(figsize=(7, 5))
    ax = fig.add_subplot()
    if not pts:
        reason = "\n".join(_text(line) for line in _no_flops_reason(trace).split("\n"))  # lines kept, as lines
        ax.text(0.5, 0.5, reason, ha="center", va="center", transform=ax.transAxes, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(_text(title or f"{_model(trace)}: time against FLOPs (leaf calls)"), fontsize=9)
        return _save(fig, format)
    colours = _colours([c.cls for c in pts])
    for cls, colour in colours.items():
        mine = [c for c in pts if c.cls == cls]
        ax.scatter([c.flops for c in mine], [_ms(c, "total_ms") for c in mine], s=18, color=colour, label=_text(literal(cls)),
                   alpha=0.85)
    ax.set_xscale("log")
    ax.set_yscale("log")
    xs = [c.flops for c in pts]
    lo, hi = min(xs) / 2, max(xs) * 2
    ts = [_ms(c, "total_ms") for c in pts]
    t_lo, t_hi = min(ts) / 2 or min(ts), _axis_end(max(ts), 2)  # neither 0 (5e-324 / 2) nor infinite on a log axis
    ax.set_xlim(lo, hi)
    ax.set_ylim(t_lo, t_hi)
    _log_tick_labels(ax.xaxis, lo, hi, _si_tick)
    _log_tick_labels(ax.yaxis, t_lo, t_hi, lambda v: f"{v:g}")
    for gflops in (1, 10, 100, 1000, 10000, 100000):
        # time_ms = flops / (gflops * 1e9) * 1e3
        ax.plot([lo, hi], [lo / gflops / 1e6, hi / gflops / 1e6], color="#bbbbbb", lw=0.6, ls="--", zorder=0)
        y = hi / gflops / 1e6
        if t_lo < y < t_hi:
            ax.text(hi, y, f" {gflops:g} GFLOP/s", fontsize=6, color="#888888", va="center")
    slowest = sorted(pts, key=lambda c: (-_ms(c, "total_ms"), c.id))[:max(label_top, 0)]
    _label_points(fig, ax, slowest)
    ax.set_xlabel("FLOPs per call")
    ax.set_ylabel("time per call (ms)")
    ax.set_title(_text(title or f"{_model(trace)}: time against FLOPs (leaf calls)"), fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3, which="both", lw=0.3)
    return _save(fig, format)


def _no_flops_reason(trace: Trace) -> str:
    """Why the time-vs-FLOPs plot has no point: FLOPs not counted (and why), or no leaf call with any."""
    unavailable = trace.meta.get("flops_unavailable")
    if unavailable:
        first = ellipsize_middle(str(unavailable).splitlines()[0], 70)
        return f"nothing to show: FLOPs were not counted\n(torch's FlopCounterMode could not run this forward:\n{first})"
    if all(c.flops is None for c in trace.calls):
        return "nothing to show: this trace has no FLOPs\n(profile() counts them unless flops=False)"
    return ("nothing to show: no leaf call has both FLOPs and a time\n(FlopCounterMode counts matrix products and "
            "convolutions;\nactivations, reshapes and element-wise ops count none)")


def _si_tick(value: float) -> str:
    """A tick value with an SI prefix, as few digits as it needs: ``500``, ``200k``, ``1M``, ``2.5G``."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:g}{prefix}"
    return f"{value:g}"


def _log_tick_labels(axis: object, lo: float, hi: float, text: Callable[[float], str]) -> None:
    """Label the ticks of a log ``axis`` spanning ``lo``..``hi`` with ``text(value)``, only where the value's
    leading digit is one the span leaves room for: powers of ten past 4 decades, 1-2-5 past 1.5, 1-2-3-5 past
    0.7, else every digit. Plain text, no math: matplotlib's minor labels (``2×10⁵``) ran together."""
    from matplotlib.ticker import FuncFormatter  # noqa: PLC0415 - matplotlib loads on first plot

    decades = math.log10(hi / lo) if hi > lo > 0 else 0.0
    digits = ({1} if decades > 4 else {1, 2, 5} if decades > 1.5 else {1, 2, 3, 5} if decades > 0.7
              else set(range(1, 10)))

    def label(value: float, _pos: object = None) -> str:
        if not 1e-300 < value < 1e300:  # a corrupt time's axis (5e-324 or 1e308 ms): no mantissa to read there
            return ""
        mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
        lead = round(mantissa)
        return text(value) if abs(mantissa - lead) < 1e-6 and lead in digits else ""

    for which in (axis.set_major_formatter, axis.set_minor_formatter):  # type: ignore[attr-defined]
        which(FuncFormatter(label))
    axis.set_tick_params(which="both", labelsize=8)  # type: ignore[attr-defined]


_LABEL_SAME_SPOT_PX = 4  # points closer than this (in pixels, both ways) share one label
_LABEL_GAP_PX = 2  # the least room kept around a label (measured text and drawn glyphs differ by a pixel or so)
# Where a point's label may go (offsets in points, and the side the text grows to): beside the point first,
# then a line at a time further above or below it, tied to the point by a thin line.
_LABEL_SPOTS = ([((3, 3), "left"), ((-3, 3), "right"), ((3, -9), "left"), ((-3, -9), "right")]
                + [((8, dy), "left") for k in range(1, 8) for dy in (3 + 7 * k, -9 - 7 * k)])


def _label_points(fig: Figure, ax: object, calls: list[Call]) -> None:
    """Name ``calls`` beside their points: calls on the same spot in one label (``layer3.1.conv2,
    layer2.1.conv2``), each label at the first of ``_LABEL_SPOTS`` where it covers no text placed before it."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    placed = [t.get_window_extent(renderer).padded(_LABEL_GAP_PX) for t in ax.texts]  # type: ignore[attr-defined]
    for members in _same_spot_groups(ax, calls):
        first = members[0]
        point = (first.flops, first.timing["total_ms"])
        names = _text(_spot_label(members))
        note = ax.annotate(names, point, fontsize=6, xytext=_LABEL_SPOTS[0][0],  # type: ignore[attr-defined]
                           textcoords="offset points")
        for k, (offset, side) in enumerate(_LABEL_SPOTS):
            note.set_position(offset)
            note.set_horizontalalignment(side)
            if not any(note.get_window_extent(renderer).padded(_LABEL_GAP_PX).overlaps(other) for other in placed):
                break
        if k >= 4:  # away from its point: drawn again with a thin line to the point it names
            note.remove()
            line = {"arrowstyle": "-", "lw": 0.4, "color": "#999999", "shrinkA": 0, "shrinkB": 2}
            note = ax.annotate(names, point, fontsize=6, xytext=offset,  # type: ignore[attr-defined]
                               textcoords="offset points", ha=side, arrowprops=line)
        placed.append(note.get_window_extent(renderer).padded(_LABEL_GAP_PX))


_LABEL_WIDTH = 32  # display columns of a point's label: a longer name keeps its end (``…layers.7.proj``)


def _spot_label(members: list[Call]) -> str:
    """The label of the calls drawn on one spot: their names joined when they fit ``_LABEL_WIDTH``, else the one
    name's end, or for several ``8 calls (Linear)`` (their class when they share one)."""
    joined = ", ".join(literal(c.label) for c in members)
    if display_width(joined) <= _LABEL_WIDTH:
        return joined
    if len(members) == 1:
        return _end(joined, _LABEL_WIDTH)
    classes = {c.cls for c in members}
    return f"{len(members)} calls" + (f" ({ellipsize_middle(literal(members[0].cls), 20)})" if len(classes) == 1 else "")


def _same_spot_groups(ax: object, calls: list[Call]) -> list[list[Call]]:
    """``calls`` grouped by where their points are drawn: those within ``_LABEL_SAME_SPOT_PX`` pixels of the
    first of a group join it (in the order given)."""
    to_pixels = ax.transData.transform  # type: ignore[attr-defined]
    groups: list[tuple[tuple[float, float], list[Call]]] = []
    for c in calls:
        px, py = to_pixels((c.flops, c.timing["total_ms"]))
        near = next((g for g in groups if abs(g[0][0] - px) < _LABEL_SAME_SPOT_PX
                     and abs(g[0][1] - py) < _LABEL_SAME_SPOT_PX), None)
        if near is None:
            groups.append(((px, py), [c]))
        else:
            near[1].append(c)
    return [members for _, members in groups]


def _channels_and_spatial(shape: Sequence[int], cls: str) -> tuple[int, int]:
    if len(shape) == 2:
        return shape[1], 1
    if len(shape) == 3 and not cls.startswith(("Conv", "BatchNorm1d", "MaxPool1d", "AvgPool1d")):
        return shape[2], shape[1]
    sp = 1
    for s in shape[2:]:
        sp *= s
    return shape[1], sp


def _flow_tensor(value: object) -> TensorMeta | None:
    meta = next((m for _, m in iter_tensors(value)), None)
    if meta is None or len(meta.shape) < 2 or not meta.dtype.startswith(("float", "bfloat", "complex")):
        return None
    return meta


# Layers whose outputs are channels-first (N, C, H, W) or channels-last (N, H, W, C, a Linear's features last)
# whatever they are fed; a LayerNorm or RMSNorm whose weights are as many as the last dimension normalises over
# it, so its 4-D output is channels-last (Swin's patch merging: (N, H/2, W/2, 4C), where reading it channels-first
# would give C = H/2). Any other layer's 4-D or 5-D output is read like the previous point's, except:
# * that point's tensor with its dimensions permuted (a Permute module, or a permute in a parent's forward):
#   read the other way when the channels moved to the end (or from it to the front), as before when the channels
#   kept their place; any other permutation cannot be told;
# * a tensor of other sizes (a reshape, an upsampling, a concatenation): read the other way only when that
#   reading alone keeps both the previous point's channel count and its spatial size (MaxViT's reshapes into
#   windows and back); it cannot be told when the previous point's reading changes both the channel count and
#   the spatial size while the other keeps the channels (a concatenation changes the channels alone, an
#   upsampling the spatial size alone).
# A point that cannot be told is left out of the chart (the x axis says how many), as is every point after it
# until a layer of a known layout.
_CHANNELS_FIRST = ("Conv", "LazyConv", "BatchNorm", "LazyBatchNorm", "InstanceNorm", "LazyInstanceNorm",
                   "GroupNorm", "MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool", "LPPool",
                   "FractionalMaxPool", "MaxUnpool", "Upsample", "PixelShuffle", "PixelUnshuffle",
                   "LocalResponseNorm", "Dropout2d", "Dropout3d", "ReflectionPad", "ReplicationPad", "ZeroPad")
_CHANNELS_LAST = ("Linear", "LazyLinear", "Bilinear", "NonDynamicallyQuantizableLinear")
_LAST_DIM_NORMS = ("LayerNorm", "RMSNorm")


def _reading(shape: Sequence[int], last: bool) -> tuple[int, int]:
    """(channels, spatial size) of a tensor of 3 or more dimensions read channels-last or channels-first."""
    return (shape[-1], math.prod(shape[1:-1])) if last else (shape[1], math.prod(shape[2:]))


def _moved(shape: Sequence[int], prev: Sequence[int], to_last: bool) -> bool:
    """Whether ``shape`` is ``prev`` with its channels moved to the end (``to_last``) or back to the front."""
    if to_last:
        return tuple(shape) == (prev[0], *prev[2:], prev[1])
    return tuple(shape) == (prev[0], prev[-1], *prev[1:-1])


def _layout(shape: Sequence[int], c: Call, prev: Sequence[int] | None, prev_last: bool | None) -> bool | None:
    """Whether call ``c``'s output of 4 or more dimensions is read (N, *S, C) (True), (N, C, *S) (False) or
    cannot be told (None), after a point ``prev`` read ``prev_last``."""
    if c.cls.startswith(_CHANNELS_FIRST):
        return False
    if c.cls in _CHANNELS_LAST or (c.cls in _LAST_DIM_NORMS and c.own_params in (shape[-1], 2 * shape[-1])):
        return True
    if prev is None:
        return False
    if prev_last is None:
        return None
    if len(prev) != len(shape) or tuple(prev) == tuple(shape):
        return prev_last
    if prev[0] == shape[0] and sorted(prev[1:]) == sorted(shape[1:]):  # a permutation
        if _moved(shape, prev, to_last=not prev_last):
            return not prev_last
        kept = shape[-1] == prev[-1] if prev_last else shape[1] == prev[1]
        return prev_last if kept else None
    before = _reading(prev, prev_last)
    same, other = _reading(shape, prev_last), _reading(shape, not prev_last)
    if other == before and same != before:  # only the other reading keeps channels and spatial size: windows
        return not prev_last
    if other[0] == before[0] and same[0] != before[0] and same[1] != before[1]:
        return None  # this reading changes both sizes and only the other keeps the channels: no telling
    return prev_last


def _input_last(first: Sequence[int], leaves: list[Call]) -> bool:
    """Whether the model's input of 4 or more dimensions is channels-last: when the first output is it with
    its last dimension moved to the front (an (N, H, W, C) image permuted for a convolution)."""
    nxt = next((m for m in (_flow_tensor(c.outputs) for c in leaves) if m is not None), None)
    if nxt is None or len(first) < 4 or tuple(nxt.shape) == tuple(first):
        return False
    return _moved(nxt.shape, first, to_last=False) and not _moved(nxt.shape, first, to_last=True)


def _flow(trace: Trace) -> tuple[list[tuple[str, int, int]], int, int]:
    """``flow_points``, how many of them were read channels-last, and how many outputs were left out because
    their layout cannot be told."""
    leaves = trace.leaves()
    out, last_count, unknown = [], 0, 0
    prev: Sequence[int] | None = None
    prev_last: bool | None = False
    first = _flow_tensor([trace.inputs, trace.kwargs])
    if first is not None:
        prev_last = _input_last(first.shape, leaves)
        if prev_last:
            out.append(("input", *_reading(first.shape, last=True)))
        else:
            out.append(("input", *_channels_and_spatial(first.shape, leaves[0].cls if leaves else "")))
        prev = first.shape
    for c in leaves:
        meta = _flow_tensor(c.outputs)
        if meta is None:
            continue
        shape = meta.shape
        if len(shape) >= 4:
            prev_last = _layout(shape, c, prev, prev_last)
            prev = shape
            if prev_last is None:
                unknown += 1
                continue
        if len(shape) >= 4 and prev_last:
            last_count += 1
            out.append((literal(c.label), *_reading(shape, last=True)))
        else:
            out.append((literal(c.label), *_channels_and_spatial(shape, c.cls)))
    return out, last_count, unknown


def flow_points(trace: Trace) -> list[tuple[str, int, int]]:
    """``(label, channels, spatial)``: the model's input, then each leaf call in forward order whose output
    has a floating tensor (labelled with the call's label).

    From the first such tensor: ``(N, C, *S)`` with 3 or more dimensions gives ``C`` channels and the
    product of ``S`` as the spatial size; except that a 3-D ``(N, L, E)`` tensor (sequences) gives ``E``
    channels over ``L`` positions, and a channels-last ``(N, *S, C)`` tensor of 4 or more dimensions (a
    Swin's or ConvNeXt's blocks) gives ``C`` over ``S``. A tensor is channels-last when its layer is a Linear
    (features last) or a LayerNorm over the last dimension, channels-first when its layer is a convolution,
    pooling or batch norm, and otherwise read like the previous point's unless it is that tensor with the
    channels moved to the end (or back from it), as a permute leaves it, or only one reading keeps the previous
    point's channels and spatial size; an output whose layout cannot be told (see ``_layout``) is left out,
    not guessed. A 2-D ``(N, F)`` tensor gives ``F`` channels and spatial size 1. The input is read like the
    output of the first leaf call (so a Conv1d model's input is channels-first), or channels-last when that
    output is it with its last dimension moved to the front; an integer input (token ids) is left out.
    """
    return _flow(trace)[0]


def _plain_count(value: float, _pos: object = None) -> str:
    """A tick label as a plain number (``512``, ``16K``, ``1M``): no mathtext, which costs a second a chart."""
    if value < 1:
        return f"{value:g}"
    n = round(value)
    for unit, div in (("M", 2**20), ("K", 2**10)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return str(n)



def shape_flow(trace: Trace, *, format: str = "svg", title: str | None = None, max_labels: int = 40) -> str | bytes:
    """Channels (top) and spatial size (bottom, log scale) of the input and each leaf call's output, along the
    forward (``flow_points``). SVG is drawn directly (a few milliseconds, where matplotlib takes most of a
    second for a chart this size); PNG goes through matplotlib."""
    if max_labels < 0:
        raise ValueError(f"max_labels must be >= 0 (0: no x labels), got {max_labels}")
    pts, last, unknown = _flow(trace)
    title = title or f"{_model(trace)}: shape flow along the forward"
    if format.lower() == "svg":
        return _flow_svg(pts, title, max_labels, last, unknown)
    from matplotlib.ticker import FuncFormatter  # noqa: PLC0415 - matplotlib loads on first plot

    fig = _figure(figsize=(max(7.0, min(16.0, 0.12 * len(pts) + 5)), 5.2))
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    if not pts:
        ax1.text(0.5, 0.5, _text(_NOTHING_TO_SHOW), ha="center", va="center", transform=ax1.transAxes)
        return _save(fig, format)
    xs = list(range(len(pts)))
    ax1.step(xs, [p[1] for p in pts], where="mid", color=_FLOW_COLOURS[0], lw=1.5)
    ax1.scatter(xs, [p[1] for p in pts], s=8, color=_FLOW_COLOURS[0])
    ax1.set_ylabel(_FLOW_AXES[0])
    ax1.set_yscale("log", base=2)
    ax1.yaxis.set_major_formatter(FuncFormatter(_plain_count))
    ax2.step(xs, [p[2] for p in pts], where="mid", color=_FLOW_COLOURS[1], lw=1.5)
    ax2.scatter(xs, [p[2] for p in pts], s=8, color=_FLOW_COLOURS[1])
    ax2.set_ylabel(_FLOW_AXES[1])
    ax2.set_yscale("log", base=2)
    ax2.yaxis.set_major_formatter(FuncFormatter(_plain_count))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, lw=0.4)
    ticks = _labelled(len(pts), max_labels)
    ax2.set_xticks(ticks, [_text(pts[i][0]) for i in ticks], rotation=90, fontsize=6)
    ax2.set_xlabel(_flow_x(pts, last, unknown))
    ax1.set_title(_text(title), fontsize=9)
    return _save(fig, format)


_FLOW_COLOURS = ("#4C72B0", "#C44E52")
# 1-D tensors (an unbatched MLP's) are left out: (N,) and (F,) cannot be told apart.
_NOTHING_TO_SHOW = "nothing to show: no floating-point input or output of 2 or more dimensions, (N, C, ...)"


def _labelled(n: int, max_labels: int) -> list[int]:
    """The points whose x label is written: every k-th of ``n``, at most ``max_labels`` (0: none)."""
    if max_labels <= 0:
        return []
    return list(range(0, n, max(1, -(-n // max_labels))))


_FLOW_AXES = ("channels / features", "spatial size (H·W or length)")
def _flow_x(pts: list[tuple[str, int, int]], channels_last: int = 0, unknown: int = 0) -> str:
    """The x axis's title: whether the first point is the input (an integer input, token ids, is left out),
    how many outputs were read channels-last and how many were left out, their layout unknown."""
    if pts and pts[0][0] == "input":
        text = "the input, then the leaf calls in forward order"
    else:
        text = "the leaf calls in forward order (the input holds integers: no channels to show)"
    if channels_last:
        text += f"; {channels_last} channels-last outputs (N, H, W, C) read as such"
    if unknown:
        text += f"; {unknown} outputs left out, their layout (channels first or last) unknown"
    return text


def _flow_svg(pts: list[tuple[str, int, int]], title: str, max_labels: int, channels_last: int = 0,
              unknown: int = 0) -> str:
    """The shape-flow chart as SVG text: two panels sharing the x axis, log2 y axes with plain-number ticks,
    a step line with a dot per point, every k-th x label (at most ``max_labels``) written upwards."""
    width = max(700, min(1600, 12 * len(pts) + 500))
    left, right, top, panel_h, gap = 78, 20, 34, 150, 22
    label_len = max((len(p[0]) for p in pts), default=5)
    bottom = min(200, 16 + 5.2 * min(label_len, 34)) + 24
    height = top + 2 * panel_h + gap + bottom
    plot_w = width - left - right
    out = ['<?xml version="1.0" encoding="utf-8" standalone="no"?>',
           (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height:.0f}" '
            f'viewBox="0 0 {width} {height:.0f}" font-family="DejaVu Sans, sans-serif" font-size="11">'),
           f"<title>{markup(title)}</title>",
           f'<rect width="{width}" height="{height:.0f}" fill="white"/>',
           f'<text x="{width / 2:.1f}" y="20" text-anchor="middle" font-size="12">{markup(title)}</text>']
    if not pts:
        out.append(f'<text x="{width / 2:.1f}" y="{height / 2:.1f}" text-anchor="middle" font-size="10">'
                   f"{markup(_NOTHING_TO_SHOW)}</text></svg>")
        return "\n".join(out) + "\n"
    n = len(pts)

    def x_of(i: float) -> float:
        return left + plot_w * ((i + 0.5) / n)

    for k, (axis, colour) in enumerate(zip(_FLOW_AXES, _FLOW_COLOURS)):
        y0 = top + k * (panel_h + gap)
        values = [max(p[1 + k], 1) for p in pts]
        lo = math.floor(math.log2(min(values)))
        hi = max(math.ceil(math.log2(max(values))), lo + 1)

        def y_of(v: float, y0: float = y0, lo: int = lo, hi: int = hi) -> float:
            return y0 + panel_h - 8 - (panel_h - 16) * (math.log2(v) - lo) / (hi - lo)

        out.append(f'<rect x="{left}" y="{y0}" width="{plot_w}" height="{panel_h}" fill="none" stroke="#444" '
                   'stroke-width="0.8"/>')
        every = max(1, -(-(hi - lo) // 6))
        for e in range(lo, hi + 1, every):
            y = y_of(2.0**e)
            out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd" '
                       'stroke-width="0.6"/>')
            out.append(f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">{_plain_count(2.0**e)}</text>')
        cy = y0 + panel_h / 2
        out.append(f'<text x="14" y="{cy:.1f}" text-anchor="middle" transform="rotate(-90 14 {cy:.1f})">'
                   f"{markup(axis)}</text>")
        path = [f"M{left:.1f},{y_of(values[0]):.1f}"]
        for i, v in enumerate(values):  # a step that changes half-way between points
            path.append(f"H{x_of(i - 0.5) if i else left:.1f}V{y_of(v):.1f}")
        path.append(f"H{left + plot_w:.1f}")
        out.append(f'<path d="{"".join(path)}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
        out.extend(f'<circle cx="{x_of(i):.1f}" cy="{y_of(v):.1f}" r="2.2" fill="{colour}"><title>'
                   f"{markup(pts[i][0])}: {pts[i][1]:,} channels, spatial size {pts[i][2]:,}</title></circle>"
                   for i, v in enumerate(values))
    base = top + 2 * panel_h + gap
    for i in _labelled(n, max_labels):
        x = x_of(i)
        label = _end(pts[i][0], 34)
        out.append(f'<text x="{x + 3:.1f}" y="{base + 6}" text-anchor="end" font-size="9" '
                   f'transform="rotate(-90 {x + 3:.1f} {base + 6})">{markup(label)}</text>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 8:.0f}" text-anchor="middle">{markup(_flow_x(pts, channels_last, unknown))}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


PLOTS = {"bars": time_bars, "forward": lambda t, **kw: time_bars(t, order="forward", **kw), "flops": time_vs_flops,
         "flow": shape_flow}


def render_plot(trace: Trace, kind: str = "bars", *, format: str = "svg", **options: object) -> str | bytes:
    """One of ``PLOTS`` by name: ``bars``, ``forward``, ``flops`` or ``flow``."""
    try:
        fn = PLOTS[kind]
    except KeyError:
        raise ValueError(f"unknown plot {kind!r}; choose one of {', '.join(PLOTS)}") from None
    return fn(trace, format=format, **options)  # type: ignore[operator]
