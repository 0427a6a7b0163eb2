"""Graphviz architecture diagrams: the styling of ``graph.build_graph``'s data-flow graph.

``to_dot(trace, ...)`` returns DOT source text; ``render(trace, format="svg"|"png"|"pdf"|"dot", ...)`` runs
Graphviz's ``dot`` on it and returns the bytes. Both are pure functions of the trace and the options: the same
trace gives the same bytes (stable node ids, event order, no timestamps).

Options
-------
``depth``
    Calls deeper than this fold into their ancestor at ``depth`` (``None``: every call).
``layout``
    ``"tb"`` (top to bottom), ``"lr"`` (left to right) or ``"u"``: one row per spatial resolution, the
    largest at the top and the smallest (the bottleneck) lowest, with x following the data's path, so an
    encoder-decoder reads like the U-Net paper's figure (encoder down the left, decoder up the right, skip
    connections straight across). The U layout places nodes itself (Graphviz's ``neato`` draws the edges) and
    draws no container boxes (a box cannot span several rows).
``style``
    ``"compact"`` (name, class, output shape) or ``"detailed"`` (adds input shapes, params, dtype, timings).
``unroll``
    Draw every call of a module called in a loop, instead of one node marked ×N.
``overlays``
    Any of ``"cut"`` (body / head of a cut model), ``"groups"`` (parameter groups), ``"frozen"`` (trainable vs
    frozen parameters), ``"heat"`` (time or memory) and ``"diff"`` (``shapetrace diff``: calls changed, added, or
    not reached by the other trace's failed forward, from ``options["diff"]``). ``cut`` colours borders; the others fill nodes (the
    last one named wins). Each overlay adds a legend.
``options``
    ``{"cut": {"body": [...], "head": [...]}}`` (automatic for ``nn.Sequential(body, head)``),
    ``{"param_groups": {"group": [module names]}}``, ``{"heat": "time"|"memory"|"activations"}``,
    ``{"fold": [module or class names drawn as single nodes]}``, ``{"title": "..."}``.
``show_params``
    Add the parameter count to compact labels.
``all_ops``
    Draw every recorded functional op. By default ops that only index, cast or create constants (``getitem``,
    ``long``, ``new_zeros``, masks, ...) are folded into the edges they feed; the edge's tooltip names them
    ("via getitem"), and a node that reads a folded mask or constant lists it in its tooltip.

Every piece of user text (module names, class names, op names) is escaped for Graphviz's HTML-like labels and
for the SVG: control characters are shown as Python escapes (a newline as ``\\n``), so no name can inject
markup. SVG output gets a ``<title>`` per node holding its full input/output shapes, parameters and timings
(browsers show it as the tooltip).

Edges carry their shapes as ordinary labels, laid out by dot clear of nodes, box titles and each other. A graph
of more than 300 edges is laid out with Graphviz's iteration limits; one where many long edges pass the same
ranks (``label_crowding``: a DenseNet's concatenations, in boxes or flat) or of more than 3,000 edges gets
external labels (``xlabel``) instead, placed after the layout: they may sit on a box's title, but dot finishes
in seconds rather than minutes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..tracer.records import Trace
from ..tracer.user_warnings import warn_user
from .finite import ORIGIN_MARK, is_own_code, origin_call, origin_events
from .graph import Cluster, Graph, GraphEdge, Node, build_graph
from .units import (
    display_width,
    ellipsize,
    ellipsize_middle,
    escape_controls,
    format_bytes,
    format_count,
    format_ms,
    format_shape,
    home_device,
    literal,
    no_timings_reason,
    off_home,
)

__all__ = ["HEAT_KINDS", "LAYOUTS", "OVERLAYS", "STYLES", "GraphvizNotFound", "OverlayNeedsOptions", "check_options",
           "dot_available", "render", "to_dot"]

LAYOUTS = ("tb", "lr", "u")
STYLES = ("compact", "detailed")
OVERLAYS = ("cut", "groups", "frozen", "heat", "diff")
# "unreached": a call of B that A's failed forward never got to, muted: neither a change nor an addition
DIFF_FILL = {"changed": "#ffd8a8", "added": "#c3f0c8", "unreached": "#e9e9e9"}
DIFF_WORDS = {"changed": "changed in B", "added": "added in B",
              "unreached": "not reached in A, whose forward failed first"}
FORMATS = ("svg", "png", "pdf", "dot", "jpg", "gif", "webp")

INSTALL_HINT = ("Install Graphviz to render diagrams: 'sudo apt-get install graphviz' (Debian/Ubuntu), "
                "'brew install graphviz' (macOS) or 'conda install -c conda-forge graphviz'; then check that "
                "'dot -V' works. Meanwhile, format='dot' (--format dot) writes the diagram's source.")


class OverlayNeedsOptions(ValueError):
    """An overlay was asked for whose data the trace does not hold (``overlay``: its name): the ``cut`` of a model
    that is not ``nn.Sequential(body, head)``, the parameter groups."""

    def __init__(self, overlay: str, message: str) -> None:
        super().__init__(message)
        self.overlay = overlay


class GraphvizNotFound(RuntimeError):
    """Graphviz's ``dot`` program is not on ``PATH``. ``.source`` holds the DOT text that could not be run."""

    def __init__(self, source: str = "") -> None:
        self.source = source
        super().__init__(f"Graphviz's 'dot' program was not found on PATH. {INSTALL_HINT}")


def dot_available() -> bool:
    """Whether Graphviz's ``dot`` program is on ``PATH``."""
    return shutil.which("dot") is not None


# ---- the theme ----------------------------------------------------------------------------------------------
FONT = "DejaVu Sans"
THEME = {
    "call": {"shape": "box", "style": "rounded,filled", "fillcolor": "#eaf1fb", "color": "#4f6d9a"},
    "collapsed": {"shape": "box", "style": "rounded,filled", "fillcolor": "#dbe6f6", "color": "#34507a",
                  "peripheries": "2"},
    "op": {"shape": "ellipse", "style": "filled", "fillcolor": "#fff1cf", "color": "#b8892b"},
    "input": {"shape": "box", "style": "rounded,filled,bold", "fillcolor": "#dff2dc", "color": "#3c7a36"},
    "output": {"shape": "box", "style": "rounded,filled,bold", "fillcolor": "#dff2dc", "color": "#3c7a36"},
    # where a container's own code raised: drawn as a failed call is (red border), on a pale red fill
    "failure": {"shape": "box", "style": "rounded,filled", "fillcolor": "#fdecea", "color": "#d32f2f"},
}
# A trace recorded without functional ops (Graph.unfed): the mark on a node whose input an op made, and the line
# under the title that says why such nodes have no edge into them and how to draw it.
UNFED_MARK = "input from no drawn call"
UNFED_CAPTION = ("functional ops were not recorded (trace with ops=True to draw them): a dashed box's input "
                 "came from none of the calls drawn")
EDGE = {"color": "#59636e", "fontcolor": "#3d4650"}
DOWN = {"color": "#c62828", "fontcolor": "#c62828", "penwidth": "2.2"}  # the U-Net paper's red "max pool" arrows
UP = {"color": "#2e7d32", "fontcolor": "#2e7d32", "penwidth": "2.2"}  # and its green "up-conv" arrows
SKIP = {"color": "#8a8f96", "fontcolor": "#6b7076", "style": "dashed", "penwidth": "1.6"}  # grey "copy" arrows
ERROR_COLOR = "#d32f2f"
# check_finite: the node (or, for a container's own code, the box) that made the first NaN or Inf
NONFINITE_COLOR = "#d97706"
NONFINITE_NODE_MARK = f"{ORIGIN_MARK} first NaN/Inf made here"
NONFINITE_CLUSTER_MARK = f"{ORIGIN_MARK} its own code made the first NaN/Inf"
# under the title when the model's own code made them: the model is not drawn as a box to carry the mark
NONFINITE_ROOT_CAPTION = f"{ORIGIN_MARK} the model's own code made the first NaN/Inf (amber: the ops they came from)"
CUT_COLORS = {"body": "#1565c0", "head": "#ef6c00", "removed": "#9e9e9e"}
CUT_WORDS = {"body": "body", "head": "head", "removed": "cut off"}
# The "cut off" mark's text: the grey of the removed layers' border reads at 2.4:1 on a box's fill at 9 pt; this
# one at 5.4:1 (WCAG AA asks 4.5:1 of small text)
CUT_OFF_TEXT = "#616161"
FROZEN_FILL = {"trainable": "#d7efcf", "frozen": "#dedede", "partly frozen": "#fbe7b0"}
GROUP_PALETTE = ("#a6cee3", "#fdbf6f", "#b2df8a", "#fb9a99", "#cab2d6", "#ffff99", "#8dd3c7", "#fccde5",
                 "#d9d9d9", "#bc80bd")
HEAT_SCALE = ("#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c")


# The widest a name (module, class or op name, a legend's word) is drawn, in columns: a longer one is cut in the
# middle (``encoder.…blocks.3``), the tooltip keeping it whole. The gallery's longest name is 48 columns.
NAME_WIDTH = 64

# The most a tooltip holds: a line past TIP_LINE characters is cut with an ellipsis, and past TIP_CHARS in all
# the rest of its lines is counted, not shown. Graphviz refuses a DOT string longer than 16,384 bytes ("longer
# than 16384?"), and escaping can make a character four bytes: a layer's 20,000-character error message stays
# readable in the table, and the diagram still draws. The gallery's longest tooltip line is 115 characters.
TIP_LINE = 1000
TIP_CHARS = 2000
# A graph with more edges than this is laid out with Graphviz's iteration limits (BIG_GRAPH_LIMITS): retinanet's
# 900 edges take 1.9 s without them and 0.8 s with them. The gallery's largest diagram has 29 edges, so every
# smaller one is written as before.
BIG_GRAPH_EDGES = 300
# Edge shapes are ordinary labels, which dot places in the layout (clear of nodes, cluster titles and each
# other), unless the graph has more than LABEL_EDGES_LIMIT edges or its label_crowding exceeds
# LABEL_CROWDING_LIMIT: then they are external labels (``xlabel``), placed after the layout wherever there is
# room, often on a cluster's title or another label and away from their edge. An ordinary label adds a rank
# between its edge's ends and a node on it, and a long edge becomes a chain of virtual nodes, one a rank, that
# dot orders against every other node of the rank, over and over: what slows dot is many long edges passing
# the same ranks (a DenseNet's concatenations, written in boxes or flat), whether they cross a box or not.
# label_crowding sums, over the ranks, the square of the number of edges passing each. The total of ranks
# crossed does not tell the cases apart: maxvit_t's long edges cross 9,152 ranks in all, spread thin, and it
# draws in 0.8 s; a flat 25-layer DenseNet's cross 8,775, piled on 78 ranks, and it takes 53 s.
# Measured with dot 2.43, label_crowding and time with ordinary labels, full depth unless said: regnet_y_400mf
# (303 edges) 456; swin_t (478) 598; inception_v3 (361) 543; ssd300_vgg16 (259) 5,733; fasterrcnn mobilenet
# (449) 14,146; retinanet (415) 31,219; maxvit_t (1,060) 141,960, 0.8 s; a flat DenseNet of 15 layers with its
# ops (167 edges) 104,856, 4.8 s; densenet121 at depth 3 (619) 385,784, 3.0 s; the flat DenseNet of 20 layers
# (272) 408,408, 67 s; of 25 layers (402) 1,188,135, 53 s (2.5 s with external labels); of 40 (942) 11,585,616,
# over 290 s (51 s); densenet121 (967) 2,700,488, over 4 minutes (24 s). The limit sits between maxvit_t and
# the 20-layer flat DenseNet, so densenet121 at depth 3 takes external labels though it would be quick without.
# Past a few thousand edges dot is slow either way and ordinary labels double it: maskrcnn at depth 2 (8,046
# edges with its ops) takes 181 s with them and 81 s without.
LABEL_CROWDING_LIMIT = 250_000
LABEL_EDGES_LIMIT = 3000
BIG_GRAPH_LIMITS = {"nslimit": "2", "nslimit1": "2", "mclimit": "0.1", "searchsize": "10", "remincross": "false"}
# The deepest clusters may nest for dot: its parser's stack holds about 2,500 levels, past which it reports a
# "syntax error"; a diagram nested deeper (a chain of 3,000 wrapper modules) fails first with advice instead.
MAX_CLUSTER_NESTING = 2000
# How long dot may run before the diagram is given up, with advice on how to make it smaller.
DOT_TIMEOUT_S = 300.0
# The longest text (a shape, a dtype list) a label row draws, in columns; names are cut at NAME_WIDTH.
LABEL_WIDTH = 160
# A failed call's error in its label: wrapped at spaces over at most ERROR_LINES lines of ERROR_WIDTH columns, so
# that a shape mismatch's numbers show (``mat1 and mat2 shapes cannot be multiplied (2x32 and 16x16)``); past
# that it is cut with a mark, and the tooltip holds it whole.
ERROR_WIDTH = 46
ERROR_LINES = 3


# ---- escaping -----------------------------------------------------------------------------------------------
def _markup(text: str) -> str:
    """Text that is ``literal`` already, escaped for a Graphviz HTML-like label. Graphviz reads two backslashes
    there as one, so each is doubled: ``literal``'s ``\\\\`` (a backslash before ``n``) must not turn into the
    ``\\n`` of a newline."""
    return (text.replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


def shown_name(text: str) -> str:
    """A name as a label draws it: ``literal``, cut in the middle past ``NAME_WIDTH`` columns."""
    return ellipsize_middle(literal(text), NAME_WIDTH)


def html(text: str) -> str:
    """Text for a Graphviz HTML-like label: escaped, single line, literal, cut past ``LABEL_WIDTH`` columns."""
    return _markup(ellipsize(literal(text), LABEL_WIDTH))


def tooltip(text: str) -> str:
    """A tooltip (plain, ``literal`` lines) bounded for Graphviz: each line cut past ``TIP_LINE`` characters,
    the lines past ``TIP_CHARS`` characters in all left out and counted."""
    lines = [line if len(line) <= TIP_LINE else line[:TIP_LINE - 1] + "…" for line in text.split("\n")]
    kept: list[str] = []
    used = 0
    for line in lines:
        if used + len(line) > TIP_CHARS:
            kept.append(f"… {len(lines) - len(kept)} more lines")
            break
        kept.append(line)
        used += len(line) + 1
    return "\n".join(kept)


def name_html(text: str) -> str:
    """A name for a Graphviz HTML-like label: ``html``, cut in the middle past ``NAME_WIDTH`` columns."""
    return _markup(shown_name(text))


def quote(text: str) -> str:
    """A DOT double-quoted string; backslashes doubled so Graphviz's ``\\N``-style escapes never fire, control
    characters other than the line breaks written as escapes (``units.escape_controls``: a NUL ends DOT's input)."""
    text = "\n".join(escape_controls(line) for line in str(text).split("\n"))
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _xml_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attrs(attrs: dict[str, str]) -> str:
    parts = []
    for k, v in attrs.items():
        if k in ("label", "xlabel") and v.startswith("<"):
            parts.append(f"{k}={v}")  # an HTML-like label, already escaped
        else:
            parts.append(f"{k}={quote(v)}")
    return "[" + ", ".join(parts) + "]"


# ---- labels -------------------------------------------------------------------------------------------------
def _luminance(colour: str) -> float:
    """Relative luminance (WCAG) of a ``#rrggbb`` colour; 1.0 for anything else."""
    if not re.fullmatch(r"#[0-9a-fA-F]{6}", colour):
        return 1.0

    def channel(v: int) -> float:
        c = v / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


# Graphviz refuses an HTML-like label with an empty element ("syntax error ... <B></B>"), and an empty class,
# op or module name is legal in PyTorch: these write nothing for no text, and every label part goes through them.
def _small(text: str, color: str = "#4a4a4a") -> str:
    """Small print (escaped markup) in ``color``; nothing for no text."""
    return f'<FONT POINT-SIZE="9" COLOR="{color}">{text}</FONT>' if text else ""


def _bold(text: str) -> str:
    """Bold (escaped markup); nothing for no text."""
    return f"<B>{text}</B>" if text else ""


def _lines(rows: Iterable[str]) -> str:
    """Label rows (markup) one under another, the empty ones left out."""
    return "<BR/>".join(r for r in rows if r)


def _shapes(shapes: Sequence[tuple[int, ...]]) -> str:
    """The distinct shapes a folded node's calls had, in call order: ``2×72×400 | 4×72×400 | 3×56×400`` (as the
    modules table writes them), the first two and ``| … +k`` past three."""
    texts = [format_shape(s) for s in shapes]
    return " | ".join(texts if len(texts) <= 3 else [*texts[:2], f"… +{len(texts) - 2}"])


def _error_lines(error: str, what: str = "failed") -> list[str]:
    """``failed: <error>`` (``what``: ``raised, caught`` for an exception the forward caught) (``literal``) for a
    label: wrapped at spaces over up to ``ERROR_LINES`` lines of ``ERROR_WIDTH`` columns, the last cut with a mark
    when there is more, so a long message does not pass for the whole of it (the tooltip has it all)."""
    lines = _wrap(f"{what}: " + literal(error), ERROR_WIDTH)
    if len(lines) > ERROR_LINES:
        lines = [*lines[:ERROR_LINES - 1], ellipsize(lines[ERROR_LINES - 1] + " " + lines[ERROR_LINES], ERROR_WIDTH)]
    return lines


def _node_label(n: Node, style: str, show_params: bool, extra: list[str], on_dark: bool = False,  # noqa: C901 - one branch per optional label part; to split by style
                swatches: Sequence[str] = (), time_shown: bool = False) -> str:
    """The node's HTML label; ``on_dark`` (a dark fill, the hot end of the heat scale) prints the grey
    small print near-black so it stays legible; ``swatches`` (a node in several parameter groups) adds a row
    of those colours under the text; ``time_shown``: an overlay's mark prints the node's time, so the
    detailed style does not print it again."""

    def small(text: str, color: str = "#4a4a4a") -> str:
        return _small(text, "#111111" if on_dark and color != ERROR_COLOR else color)

    rows = [_bold(name_html(n.title))]
    if n.kind == "failure":
        pass
    elif n.kind == "call":
        rows.append(small(name_html(n.cls)))
    if n.kind in ("call", "input"):
        if n.out_shape is not None:
            more = f" +{len(n.outputs) - 1}" if len(n.outputs) > 1 else ""  # the node returns several tensors
            rows.append(small(html(_shapes(n.out_shapes) + more), "#1f2d3d"))
    elif n.kind == "output":
        if n.inputs:
            rows.append(small(html(format_shape(n.inputs[0][1].shape)), "#1f2d3d"))
    elif style == "detailed" and n.out_shape is not None:
        rows.append(small(html(_shapes(n.out_shapes)), "#1f2d3d"))
    if style == "detailed":
        for path, _ in n.inputs[:3]:
            rows.append(small(html(f"in{path}: {_shapes(n.shapes_of('in', path))}")))
        if len(n.inputs) > 3:
            rows.append(small(html(f"... {len(n.inputs) - 3} more inputs")))
        dtypes = sorted({m.dtype for _, m in n.outputs} - {"float32"})
        if dtypes:
            rows.append(small(html(", ".join(map(literal, dtypes)))))
    if n.kind == "call" and (show_params or style == "detailed") and n.params:
        text = f"{format_count(n.params)} params"
        if n.trainable_params != n.params:
            text += f" ({format_count(n.trainable_params)} trainable)"
        rows.append(small(html(text)))
    if style == "detailed" and n.self_ms is not None and not time_shown:
        rows.append(small(html(f"{format_ms(n.self_ms)} ms")))
    if n.error:
        rows.extend(small(_markup(line), ERROR_COLOR) for line in _error_lines(n.error))
    elif n.caught:
        rows.extend(small(_markup(line)) for line in _error_lines(n.caught, "raised, caught"))
    rows.extend(extra)
    if not swatches:
        return "<" + _lines(rows) + ">"
    cells = "".join(f'<TD BGCOLOR="{c}" HEIGHT="7" WIDTH="14"></TD>' for c in swatches)
    return (f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="1" CELLPADDING="0"><TR><TD COLSPAN="{len(swatches)}">'
            + _lines(rows) + f"</TD></TR><TR>{cells}</TR></TABLE>>")


def _edge_label(e: GraphEdge, src_shape: tuple[int, ...] | None = None) -> str:
    """The edge's label: the shape it carries (left out when it is ``src_shape``, the shape already printed
    on the source node), with ``↓2`` / ``↑2`` when the spatial size changes and ``×N`` for N tensors."""
    if src_shape is not None and len(e.shapes) == 1 and tuple(e.shapes[0]) == tuple(src_shape):
        if e.change is None:
            return "<>"
        arrow = "↓" if e.change[0] == "down" else "↑"
        return "<" + html(f"{arrow}{e.change[1]}") + ">"
    text = format_shape(e.shapes[0])
    if len(e.shapes) > 1:
        text += f" +{len(e.shapes) - 1}"
    if e.change is not None:
        arrow = "↓" if e.change[0] == "down" else "↑"
        text = f"{arrow}{e.change[1]}  {text}"
    if e.count > 1 and len(e.shapes) == 1:
        text += f" ×{e.count}"
    return "<" + html(text) + ">"


def _edge_tooltip(e: GraphEdge, names: dict[str, str], home: str | None = None) -> str:
    """An edge's tooltip: where from and to, every shape it carries in full with its dtype and, when a tensor is
    off ``home`` (the trace's device), its device (``on meta``), then what was folded into it."""
    # an edge carrying data beside an index names which tensor is the index
    mixed = bool(e.index_shapes) and set(e.index_shapes) != {tuple(s) for s in e.shapes}
    marks = [" index" if mixed and tuple(s) in e.index_shapes else "" for s in e.shapes]
    if len({e.dtype_of(k) for k in range(len(e.shapes))}) > 1:  # each tensor with its own dtype
        shapes = ", ".join(f"{format_shape(s, sep=', ', paren=True)} {literal(e.dtype_of(k))}{marks[k]}"
                           for k, s in enumerate(e.shapes))
    else:
        shapes = ", ".join(format_shape(s, sep=", ", paren=True) + marks[k] for k, s in enumerate(e.shapes))
        shapes += f" {e.dtype_of(0) if e.shapes else e.dtype}"
    where = off_home(e.devices, home)
    if where:
        shapes += f" on {where}"
    text = f"{literal(names[e.src])} → {literal(names[e.dst])}: {shapes}"
    if e.index_into:
        which = "the tensor marked index is the index into" if mixed else "the index into"
        text += f" ({which} {', '.join(literal(v) for v in e.index_into)}, not the data it picked)"
    if e.change is not None:
        text += f" (spatial size {'/' if e.change[0] == 'down' else '×'}{e.change[1]})"
    if e.skip:
        text += " (skip: read outside the arguments)"
    if e.src == e.dst:
        text += " (carried from one iteration to the next)"
    if e.via:
        text += f" (via {', '.join(literal(v) for v in e.via)}: folded ops, drawn with all ops)"
    return text


# ---- overlays -----------------------------------------------------------------------------------------------
def _belongs(module: str, names: Iterable[str]) -> bool:
    """Whether ``module`` is one of ``names``, inside one, or contains one."""
    for name in names:
        if name == "" or module == name or module.startswith(name + ".") or name.startswith(module + ".") \
                or module == "":
            return True
    return False


# What an overlay needs that the trace does not hold, said as the options to pass.
_NEEDS = {
    "cut": ("the 'cut' overlay needs options={'cut': {'body': [module names], 'head': [...]}} unless the model is "
            "nn.Sequential(body, head)"),
    "groups": "the 'groups' overlay needs options={'param_groups': {group: [module names]}}",
    "diff": ("the 'diff' overlay needs options={'diff': {'changed': [...], 'added': [...], 'removed': [...]}}, as "
             "shapetrace diff A B gives it"),
}
HEAT_KINDS = ("time", "memory", "activations")


def _check_overlay_names(overlays: Sequence[str]) -> None:
    unknown = [o for o in overlays if o not in OVERLAYS]
    if unknown:
        raise ValueError(f"unknown overlay {unknown[0]!r}; choose from {', '.join(OVERLAYS)}")


def _is_names(value: Any) -> bool:
    """Whether ``value`` is a collection of names: a list, tuple, set or any other sized iterable of strings
    that is not itself a string or a mapping (a one-shot iterator, read here, would be empty when drawn)."""
    return (isinstance(value, Collection) and not isinstance(value, str | bytes | Mapping)
            and all(isinstance(v, str) for v in value))


def _names_list(what: str, value: Any) -> None:
    """``value`` (the option ``what``) is a list (or tuple, set) of names: else ``TypeError`` saying so."""
    if not _is_names(value):
        raise TypeError(f"{what} must be a list of module or class names, e.g. ['encoder'], "
                        f"got {value!r} ({type(value).__name__})")


def check_options(trace: Trace, overlays: Sequence[str] | str | None, options: Any) -> None:
    """Refuse, before anything is drawn, ``overlays`` and ``options`` the diagram of ``trace`` cannot draw: an
    unknown overlay, one whose data neither ``options`` nor the trace holds (``OverlayNeedsOptions``), and known
    options of the wrong type (``fold``, ``title``, ``heat``, ``cut``, ``param_groups``, ``diff``). Other keys
    are left alone (an exhibit's options carry more). What needs measurements (``heat``) is checked on drawing."""
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(f"options must be a dict, e.g. {{'fold': ['Block']}}, got {options!r} "
                        f"({type(options).__name__})")
    options = options or {}
    overlays = overlays if overlays else options.get("overlays", ())
    if isinstance(overlays, str):
        overlays = [overlays]
    if not _is_names(overlays):
        raise TypeError(f"overlays must be a list of overlay names ({', '.join(OVERLAYS)}), got {overlays!r}")
    _check_overlay_names(overlays)
    if "fold" in options:
        _names_list("options['fold']", options["fold"])
    title = options.get("title")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"options['title'] must be a string, got {title!r} ({type(title).__name__})")
    if options.get("heat") is not None and options["heat"] not in HEAT_KINDS:
        raise ValueError(f"options['heat'] must be one of {', '.join(map(repr, HEAT_KINDS))}, got {options['heat']!r}")
    for key in ("cut", "param_groups", "diff"):
        if options.get(key) is not None and not isinstance(options[key], Mapping):
            raise TypeError(f"options[{key!r}] must be a dict, got {options[key]!r} ({type(options[key]).__name__})")
    for part, names in (options.get("cut") or {}).items():
        _names_list(f"options['cut'][{part!r}]", names)
    for group, names in (options.get("param_groups") or {}).items():
        _names_list(f"options['param_groups'][{group!r}]", names)
    needs = {"cut": bool(options.get("cut")) or _auto_cut(trace) is not None,
             "groups": bool(options.get("param_groups")), "diff": options.get("diff") is not None}
    for overlay in overlays:
        if not needs.get(overlay, True):
            raise OverlayNeedsOptions(overlay, _NEEDS[overlay])


def _auto_cut(trace: Trace) -> dict[str, list[str]] | None:
    roots = [c for c in trace.calls if c.parent is None]
    if not roots or roots[0].cls != "Sequential":
        return None
    kids = [c.module for c in trace.children(roots[0])]
    if sorted(set(kids)) == ["0", "1"]:
        return {"body": ["0"], "head": ["1"]}
    return None


class _Overlay:
    """Per-node fill / border / label marks from the chosen overlays, and the legend rows they need.

    Fills overlap: the last overlay named wins a node. The legend keeps only what is drawn: a row of the
    frozen or groups overlay whose colour no node shows any more is left out, and so is the whole legend of a
    heat or diff overlay whose every fill a later overlay painted over."""

    def __init__(self, trace: Trace, graph: Graph, overlays: Sequence[str], options: dict[str, Any],
                 boxes_drawn: bool = True) -> None:
        self.boxes_drawn = boxes_drawn  # False in the U layout, which draws no container boxes
        self.box_time: dict[str, tuple[str, str]] = {}  # cluster id -> (heat colour, its own time): the time heat
        self.fill: dict[str, str] = {}
        self.border: dict[str, str] = {}
        self.marks: dict[str, list[str]] = {}
        self.time_marked: set[str] = set()  # nodes whose marks print their self time (the time heat)
        self.legend: list[tuple[str, str, str]] = []  # (title, colour, text)
        self._rows: list[tuple[str, str, str, str, str]] = []  # (overlay, key, title, colour, text)
        self._painted: dict[str, tuple[str, tuple[str, ...]]] = {}  # node -> (overlay, legend keys of its fill)
        self._painters: set[str] = set()  # overlays that filled some node, painted over since or not
        _check_overlay_names(overlays)
        calls = [n for n in graph.nodes if n.kind == "call"]
        for name in overlays:
            getattr(self, f"_{name}")(trace, graph, calls, options)
        shown = {(o, k) for o, keys in self._painted.values() for k in keys}
        owners = {o for o, _ in self._painted.values()}
        for overlay, key, title, colour, text in self._rows:
            if overlay in ("frozen", "groups"):
                keep = (overlay, key) in shown
            elif overlay in ("heat", "diff"):  # a scale, or counts worth reading even when zero: all or nothing
                keep = overlay in owners or overlay not in self._painters
            else:
                keep = True
            if keep:
                self.legend.append((title, colour, text))
            elif overlay == "heat":
                self.box_time.clear()  # the scale is gone, so are the boxes' colours read on it

    def _paint(self, overlay: str, nid: str, colour: str, *keys: str) -> None:
        """Fill node ``nid`` with ``colour`` for ``overlay``, whose legend rows ``keys`` it shows."""
        self.fill[nid] = colour
        self._painted[nid] = (overlay, keys)
        self._painters.add(overlay)

    def _row(self, overlay: str, key: str, title: str, colour: str, text: str) -> None:
        self._rows.append((overlay, key, title, colour, text))

    def _cut(self, trace: Trace, graph: Graph, calls: list[Node], options: dict[str, Any]) -> None:
        cut = options.get("cut") or _auto_cut(trace)
        if not cut:
            raise OverlayNeedsOptions("cut", _NEEDS["cut"])
        for part in ("body", "head", "removed"):  # "removed": what the cut drops (create_body's avgpool, fc)
            names = list(cut.get(part, []))
            if not names and (part == "removed" or cut.get("removed")):
                continue  # a part the cut does not name (a body and what it drops, no head yet)
            for n in calls:
                if names and _belongs(n.module, names) and n.id not in self.border:
                    self.border[n.id] = CUT_COLORS[part]
                    if part == "removed":
                        self.marks.setdefault(n.id, []).append(_small(html("cut off"), CUT_OFF_TEXT))
            self._row("cut", part, "cut", CUT_COLORS[part], f"{CUT_WORDS[part]}: {', '.join(names) or '-'}")

    def _frozen(self, trace: Trace, graph: Graph, calls: list[Node], options: dict[str, Any]) -> None:
        for n in calls:
            if not n.params:
                continue
            state = ("trainable" if n.trainable_params == n.params
                     else "frozen" if n.trainable_params == 0 else "partly frozen")
            self._paint("frozen", n.id, FROZEN_FILL[state], state)
            if state != "trainable":
                self.marks.setdefault(n.id, []).append(_small(html(state), "#333333"))
        for state, colour in FROZEN_FILL.items():
            self._row("frozen", state, "parameters", colour, state)

    def _groups(self, trace: Trace, graph: Graph, calls: list[Node], options: dict[str, Any]) -> None:
        groups = options.get("param_groups")
        if not groups:
            raise OverlayNeedsOptions("groups", _NEEDS["groups"])
        colours = {g: GROUP_PALETTE[i % len(GROUP_PALETTE)] for i, g in enumerate(groups)}
        for n in calls:
            mine = [g for g, names in groups.items() if _belongs(n.module, names)]
            if mine:  # several: a row of swatches
                self._paint("groups", n.id, ":".join(colours[g] for g in mine), *map(str, mine))
        for g, colour in colours.items():
            self._row("groups", str(g), "parameter groups", colour, str(g))

    def _diff(self, trace: Trace, graph: Graph, calls: list[Node], options: dict[str, Any]) -> None:
        """``shapetrace diff A B``'s picture of B: changed and added calls filled, calls A's failed forward did
        not reach filled grey (marked "not reached in A"), A's removed calls and those B's failed forward did
        not reach listed."""
        if options.get("diff") is None:
            raise OverlayNeedsOptions("diff", _NEEDS["diff"])
        diff = options["diff"]
        marked: set[str] = set()  # a node drawing calls of several kinds reads as the first: changed, added
        for kind in ("changed", "added", "unreached"):
            names = set(diff.get(kind, []))
            # the calls of B, where given (``shapetrace diff`` gives them): a node is painted for the calls it
            # draws or hides, and the legend counts calls, as the diff's text does; else every call of a module
            ids = set(diff[f"{kind}_calls"]) if f"{kind}_calls" in diff else None
            for n in calls:
                if ids is not None:
                    hit = bool(ids.intersection(n.calls) or ids.intersection(n.folded))
                else:
                    inside = n.collapsed and any(m.startswith(n.module + ".") or not n.module for m in names)
                    hit = n.module in names or inside
                if hit and n.id not in marked:
                    self._paint("diff", n.id, DIFF_FILL[kind], kind)
                    if kind == "unreached":
                        self.marks.setdefault(n.id, []).append(_small(html("not reached in A"), CUT_OFF_TEXT))
                    marked.add(n.id)
            count = len(ids) if ids is not None else len(names)
            if count or kind == "changed":
                self._row("diff", kind, "diff against A", DIFF_FILL[kind], f"{DIFF_WORDS[kind]} ({count})")
        listings = {"removed": "only in A", "unreached_in_b": "not reached in B, whose forward failed first"}
        for key, words in listings.items():
            listed = list(diff.get(key, []))
            if listed:
                shown = ", ".join(listed[:8]) + (f", … ({len(listed)} in all)" if len(listed) > 8 else "")
                # the calls, as the text counts them (a listed layer may stand for the calls inside it too)
                count = f" ({diff.get(key + '_calls', len(listed))})" if key == "unreached_in_b" else ""
                self._row("diff", key, "diff against A", "#ffffff", f"{words}{count}: {shown}")

    def _heat(self, trace: Trace, graph: Graph, calls: list[Node], options: dict[str, Any]) -> None:
        kind = options.get("heat")
        nodes = [n for n in graph.nodes if n.kind in ("call", "op")]
        if kind is None:
            kind = ("time" if any(n.self_ms is not None for n in nodes)
                    else "memory" if any(n.peak_bytes is not None for n in nodes) else "activations")
        if kind == "time":
            values = {n.id: n.self_ms for n in nodes if n.self_ms is not None}
            fmt = (lambda v: f"{format_ms(v)} ms")
        elif kind == "memory":  # sizes stay integers: a hand-made record's may be beyond any float
            values = {n.id: n.peak_bytes for n in nodes if n.peak_bytes is not None}
            fmt = (lambda v: format_bytes(int(v)))
        elif kind == "activations":
            values = {n.id: n.activation_bytes for n in nodes}
            fmt = (lambda v: format_bytes(int(v)))
        else:
            raise ValueError(f"heat must be one of {', '.join(map(repr, HEAT_KINDS))}, got {kind!r}")
        if not values:
            if kind == "memory":
                raise ValueError("the 'heat' overlay (memory) needs peak memory, which only a profile on CUDA "
                                 "measures; use heat 'activations' (sizes from shapes) or 'time'")
            raise ValueError(f"the 'heat' overlay ({kind}) needs a profiled trace: no call has that measurement "
                             f"({no_timings_reason(trace)})")
        own = _own_times(trace, graph) if kind == "time" else {}  # containers' and the root's own time
        top = max([*values.values(), *own.values()]) or 1.0
        for nid, v in values.items():
            step = min(len(HEAT_SCALE) - 1, int(v / top * (len(HEAT_SCALE) - 1) + 0.5))
            self._paint("heat", nid, HEAT_SCALE[step], "scale")
            self.marks.setdefault(nid, []).append(_small(html(fmt(v)), "#222222"))
            if kind == "time":
                self.time_marked.add(nid)
        title = {"time": "time (self)", "memory": "peak memory", "activations": "activation size"}[kind]
        self._row("heat", "scale", title, HEAT_SCALE[0], f"0 {fmt(0.0).split(' ', 1)[-1]}")
        self._row("heat", "scale", title, HEAT_SCALE[len(HEAT_SCALE) // 2], fmt(top // 2 if isinstance(top, int) else top / 2))
        self._row("heat", "scale", title, HEAT_SCALE[-1], fmt(top))
        if own:
            self._own_time_rows(trace, graph, own, top, title)

    def _own_time_rows(self, trace: Trace, graph: Graph, own: dict[str | None, float], top: float,
                       title: str) -> None:
        """The time heat of containers (``_own_times``): each box's own time on its label, coloured on the same
        scale; the root's, which has no box, in the legend. In the U layout, which draws no boxes, the
        legend lists the containers' times instead."""
        def colour(v: float) -> str:
            return HEAT_SCALE[min(len(HEAT_SCALE) - 1, int(v / top * (len(HEAT_SCALE) - 1) + 0.5))]

        names = {c.id: c.title for c in graph.clusters}
        boxes = sorted(((v, cid) for cid, v in own.items() if cid is not None), key=lambda t: -t[0])
        if boxes and self.boxes_drawn:
            for v, cid in boxes:
                self.box_time[cid] = (colour(v), f"{format_ms(v)} ms self")
            self._row("heat", "boxes", title, "#ffffff",
                      "a box's label: the container's own time, outside its child modules")
        elif boxes:
            listed = ", ".join(f"{names[cid]} {format_ms(v)} ms" for v, cid in boxes[:8])
            more = f", … ({len(boxes)} in all)" if len(boxes) > 8 else ""
            self._row("heat", "boxes", title, "#ffffff", f"containers' own time (no boxes here): {listed}{more}")
        if None in own:
            root = next(c for c in trace.calls if c.parent is None)
            self._row("heat", "root", title, colour(own[None]),
                      f"{root.cls or '(root)'} (the model's own forward, no box): {format_ms(own[None])} ms")


def _own_times(trace: Trace, graph: Graph) -> dict[str | None, float]:
    """The self time (``self_ms``: outside its child modules) of each container drawn as a box, by cluster id,
    summed over the calls the box stands for, and the root's (key ``None``) when no node draws it. The nodes
    carry the rest: together they hold every call's self time once. Calls without a self time count none."""
    def own(ids: Iterable[int]) -> float | None:
        times = [(trace.calls[i].timing or {}).get("self_ms") for i in ids]
        times = [t for t in times if isinstance(t, (int, float))]
        return float(sum(times)) if times else None

    out: dict[str | None, float] = {}
    for c in graph.clusters:
        v = own(c.calls)
        if v is not None:
            out[c.id] = v
    drawn = {i for n in graph.nodes for i in (*n.calls, *n.folded)} | {i for c in graph.clusters for i in c.calls}
    root = next((i for i, c in enumerate(trace.calls) if c.parent is None), None)
    if root is not None and root not in drawn:
        v = own([root])
        if v is not None:
            out[None] = v
    return out


def _wrap(text: str, width: int = 34) -> list[str]:
    """``text`` (``literal`` already) broken at spaces into lines of at most ``width`` characters (a longer
    word keeps its line, cut in the middle past ``NAME_WIDTH`` columns)."""
    lines: list[str] = []
    for word in (ellipsize_middle(w, NAME_WIDTH) for w in text.split(" ")):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def _legend(rows: list[tuple[str, str, str]]) -> str:
    """The legend as a table; long texts wrap and every cell keeps a margin, so no text touches a border
    even where the viewer's font runs wider than Graphviz's estimate."""
    cells = ['<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="5" COLOR="#9e9e9e">']
    last = None
    for title, colour, text in rows:
        if title != last:
            cells.append(f'<TR><TD COLSPAN="2" BORDER="0" ALIGN="LEFT">{_bold(html(title))}</TD></TR>')
            last = title
        # two no-break spaces of slack per line: browsers' fonts often run wider than Graphviz's estimate
        body = "<BR/>".join(_markup(line) + "&#160;&#160;" for line in _wrap(literal(text)))
        cells.append(f'<TR><TD BGCOLOR="{colour}" WIDTH="18"> </TD><TD ALIGN="LEFT" BALIGN="LEFT">{body}</TD></TR>')
    cells.append("</TABLE>")
    return "<" + "".join(cells) + ">"


def _timed_box_label(label: str, colour: str, text: str) -> str:
    """A box's label ``label`` (``<...>`` markup) followed by a swatch of the time heat: ``text`` (the box's
    own time) on ``colour``, dark print or light as the colour needs."""
    ink = "#ffffff" if _luminance(colour) < 0.4 else "#222222"
    return (f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1"><TR><TD>{label[1:-1]}</TD>'
            f'<TD WIDTH="4"></TD><TD BGCOLOR="{colour}" CELLPADDING="2">{_small(html(text), ink)}</TD></TR></TABLE>>')


# ---- DOT ----------------------------------------------------------------------------------------------------
def _settings(depth: int | None, layout: str | None, style: str | None, unroll: bool | None,
              overlays: Sequence[str] | str | None, options: dict[str, Any] | None) -> tuple:
    """Arguments given explicitly win; otherwise an exhibit's ``options`` (``depth``, ``layout``, ``style``,
    ``unroll``, ``overlays``) supply the defaults, then the renderer's own."""
    options = dict(options or {})
    depth = depth if depth is not None else options.get("depth")
    layout = layout or options.get("layout", "tb")
    style = style or options.get("style", "compact")
    unroll = unroll if unroll is not None else bool(options.get("unroll", False))
    overlays = overlays if overlays else options.get("overlays", ())
    if isinstance(overlays, str):
        overlays = [overlays]
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    return depth, layout, style, unroll, list(overlays), options


def to_dot(trace: Trace, *, depth: int | None = None, layout: str | None = None, style: str | None = None,  # noqa: PLR0913 - the public keyword options of a diagram; RenderOptions carries them in the registry
           unroll: bool | None = None, overlays: Sequence[str] = (), options: dict[str, Any] | None = None,
           show_params: bool = False, all_ops: bool | None = None) -> str:
    """The diagram of ``trace`` as Graphviz DOT source (see the module docstring for the options)."""
    return _diagram(trace, depth, layout, style, unroll, overlays, options, show_params, all_ops).text()


def _diagram(trace: Trace, depth: int | None, layout: str | None, style: str | None, unroll: bool | None,  # noqa: PLR0913 - to take RenderOptions when to_dot and render do
             overlays: Sequence[str] | str | None, options: dict[str, Any] | None, show_params: bool,
             all_ops: bool | None = None) -> _Dot:
    """The graph of ``trace`` for these settings, ready to write as DOT."""
    depth, layout, style, unroll, overlays, options = _settings(depth, layout, style, unroll, overlays, options)
    all_ops = all_ops if all_ops is not None else bool(options.get("all_ops", False))
    graph = build_graph(trace, depth=depth, unroll=unroll, fold=options.get("fold", ()), all_ops=all_ops)
    return _Dot(trace, graph, layout, style, overlays, options, show_params)


class _Dot:
    def __init__(self, trace: Trace, graph: Graph, layout: str, style: str, overlays: list[str],
                 options: dict[str, Any], show_params: bool) -> None:
        self.trace, self.graph, self.layout, self.style = trace, graph, layout, style
        self.unfed = set(graph.unfed)
        self.home = home_device(trace)  # a node whose tensors are elsewhere says where (``small_marks``)
        self.origin = origin_call(trace)  # check_finite: the call that made the first NaN or Inf (``small_marks``)
        # and, where a container's own code made them, the ops it ran just before they were seen (the candidates)
        self.origin_ops = {i for kind, i in origin_events(trace) if kind == "op"}
        self.small_print = {n.id: self.small_marks(n) for n in graph.nodes}  # read for the U layout and each label
        self.show_params = show_params
        self.overlay = _Overlay(trace, graph, overlays, options, boxes_drawn=layout != "u")
        self.options = options
        self.lines: list[str] = []
        self.names = {n.id: n.title for n in graph.nodes} | {c.id: c.title for c in graph.clusters}
        self.by_id = {n.id: n for n in graph.nodes}
        self.pos: dict[str, tuple[float, float]] = {}  # the U layout's node positions
        self.tails = cluster_tails(graph)  # each box's last node, which its outgoing edges leave from
        self.big = layout != "u" and len(graph.edges) > BIG_GRAPH_EDGES  # laid out with limits
        self.xlabels = layout != "u" and (len(graph.edges) > LABEL_EDGES_LIMIT  # shapes placed after the layout
                                          or label_crowding(graph, self.tails) > LABEL_CROWDING_LIMIT)

    def text(self) -> str:
        g, out = self.graph, self.lines
        rankdir = "LR" if self.layout == "lr" else "TB"
        out.append("digraph shapetrace {")
        gattrs = {"rankdir": rankdir, "fontname": FONT, "fontsize": "11", "nodesep": "0.3", "ranksep": "0.4",
                  "bgcolor": "white", "compound": "true", "newrank": "true", "outputorder": "edgesfirst"}
        if self.layout == "u":  # positions are computed here; neato only draws the edges
            gattrs.update(layout="neato", splines="true", overlap="true")
        if self.big:
            gattrs.update(BIG_GRAPH_LIMITS)
        title = self.options.get("title", self.trace.model.cls)
        caption = [_small(html(UNFED_CAPTION))] if g.unfed else []
        if self.origin is not None and self.trace.calls[self.origin].parent is None and is_own_code(self.trace):
            caption.append(_small(html(NONFINITE_ROOT_CAPTION), NONFINITE_COLOR))
        if title or caption:
            gattrs.update(label=f"<{_lines([_bold(name_html(str(title or ''))), *caption])}>", labelloc="t",
                          fontsize="13")
        out.append(f"  graph {_attrs(gattrs)}")
        out.append(f"  node {_attrs({'fontname': FONT, 'fontsize': '10', 'margin': '0.12,0.05', 'height': '0.3'})}")
        out.append(f"  edge {_attrs({'fontname': FONT, 'fontsize': '8.5', 'arrowsize': '0.7', **EDGE})}")
        if self.layout == "u":
            pos = self.pos = _u_positions(g, self.style, self.small_print,
                                          {(e.src, e.dst): _edge_label(e, self._printed_shape(e.src)) for e in g.edges})
            for n in g.nodes:
                out.append("  " + self.node_stmt(n, pos[n.id]))
        else:
            self.emit_clusters()
        for e in g.edges:
            out.append("  " + self.edge_stmt(e))
        if self.layout != "u":
            out += [f"  {a} -> {b} [style=invis]" for a, b in self.unfed_after()]
        if self.overlay.legend:
            at = ""
            if self.layout == "u":  # neato would put it anywhere, over the nodes: pinned right of the U
                x, y = _u_legend_position(g, self.pos, self.style, self.small_print, self.overlay.legend)
                at = f', pos="{x:.2f},{y:.2f}!"'
            out.append(f"  legend [shape=plaintext, style=\"\"{at}, label={_legend(self.overlay.legend)}]")
        out.append("}")
        return "\n".join(out) + "\n"

    def unfed_after(self) -> list[tuple[str, str]]:
        """An invisible edge into each unfed node (``Graph.unfed``) from the node drawn just before it in event
        order: ranked after what ran before it, not at the top beside the input as a node with no edge into it
        would be."""
        pairs, before = [], None
        for n in self.graph.nodes:
            if n.id in self.unfed and before is not None:
                pairs.append((before, n.id))
            if n.kind in ("call", "op", "input"):
                before = n.id
        return pairs

    def node_stmt(self, n: Node, pos: tuple[float, float] | None = None) -> str:
        attrs = dict(THEME["collapsed" if n.collapsed else n.kind])
        if pos is not None:
            attrs["pos"] = f"{pos[0]:.2f},{pos[1]:.2f}!"
        ov = self.overlay
        swatches: list[str] = []
        if n.id in ov.fill:
            fill = ov.fill[n.id]
            if ":" in fill:  # several groups: a row of swatches under the label, never stripes behind it
                swatches = fill.split(":")
                attrs["fillcolor"] = "#ffffff"
            else:
                attrs["fillcolor"] = fill
        if n.id in ov.border:
            attrs.update(color=ov.border[n.id], penwidth="2.5")
        if n.error:
            attrs.update(color=ERROR_COLOR, penwidth="2.5")
        elif self._made_first_nonfinite(n) or any(i in self.origin_ops for i in n.ops):
            attrs.update(color=NONFINITE_COLOR, penwidth="2.5")
        elif n.caught:  # raised, and the forward went on: not the failure's red
            attrs["style"] = attrs["style"] + ",dashed"
        on_dark = n.id in ov.fill and not swatches and _luminance(ov.fill[n.id]) < 0.4
        marks = ov.marks.get(n.id, [])
        if n.id in self.unfed:  # its input came from ops the trace did not record (Graph.unfed)
            attrs["style"] = attrs["style"] + ",dashed"
        marks = [*marks, *(_small(html(t), "#111111" if on_dark else "#4a4a4a") for t in self.small_print[n.id])]
        attrs["label"] = _node_label(n, self.style, self.show_params, marks, on_dark, swatches,
                                     time_shown=n.id in ov.time_marked)
        attrs["tooltip"] = tooltip(n.tooltip(self.home))
        return f"{n.id} {_attrs(attrs)}"

    def small_marks(self, n: Node) -> list[str]:
        """The small-print lines a node carries besides its own: ``UNFED_MARK`` (its input came from ops the
        trace did not record, ``Graph.unfed``) and the devices, other than the trace's own
        (``units.home_device``), of the tensors it makes (an output node: receives), which the shapes leave
        unsaid."""
        marks = [UNFED_MARK] if n.id in self.unfed else []
        if self._made_first_nonfinite(n):
            marks.append(NONFINITE_NODE_MARK)
        if self.home is not None:
            drawn = n.inputs if n.kind == "output" else n.outputs
            elsewhere = sorted({m.device for _, m in drawn} - {self.home})
            if elsewhere:
                marks.append("on " + ", ".join(map(literal, elsewhere)))
        return marks

    def _made_first_nonfinite(self, n: Node) -> bool:
        """Whether ``n`` draws the call that made the first NaN or Inf (``check_finite``), or holds it folded."""
        return self.origin is not None and (self.origin in n.calls or self.origin in n.folded)

    def emit_clusters(self) -> None:
        """Every node and cluster, each cluster's contents inside it in event order, with a stack of its own:
        clusters nested thousands deep are written like any others (no recursion limit)."""
        g = self.graph
        kids: dict[str | None, list[tuple[int, str, Any]]] = {}
        for n in g.nodes:
            kids.setdefault(n.cluster, []).append((n.order, "n", n))
        for c in g.clusters:
            kids.setdefault(c.parent, []).append((c.order, "c", c))

        def contents(parent: str | None) -> Iterator[tuple[int, str, Any]]:
            return iter(sorted(kids.get(parent, []), key=lambda t: (t[0], t[1])))

        stack = [(contents(None), "  ")]
        while stack:
            items, indent = stack[-1]
            entry = next(items, None)
            if entry is None:
                stack.pop()
                if stack:
                    self.lines.append(f"{stack[-1][1]}}}")  # the end of the cluster just written
                continue
            _, kind, item = entry
            if kind == "n":
                self.lines.append(indent + self.node_stmt(item))
                continue
            self.open_cluster(item, indent)
            stack.append((contents(item.id), indent + "  "))

    def open_cluster(self, c: Cluster, indent: str) -> None:
        """The start of cluster ``c``'s subgraph: its label, style and tooltip."""
        self.lines.append(f"{indent}subgraph {c.id} {{")
        parts = [_bold(name_html(c.title)), _small(name_html(c.cls), "#5a6470")]
        label = "<" + "  ".join(p for p in parts if p) + ">"
        attrs = {"label": label, "style": "rounded,dashed,filled", "fillcolor": "#f7f9fc",
                 "color": "#9aa8bb", "labeljust": "l", "fontsize": "10", "tooltip": tooltip(self._cluster_tip(c))}
        if c.error:  # its own code raised: a failed call's red border; the failure node inside says what
            label = "<" + "  ".join(p for p in [*parts, _small(html("failed"), ERROR_COLOR)] if p) + ">"
            attrs.update(label=label, style="rounded,filled", color=ERROR_COLOR, penwidth="2.5")
        elif self.origin is not None and self.origin in c.calls:  # its own code made the first NaN or Inf
            mark = _small(html(NONFINITE_CLUSTER_MARK), NONFINITE_COLOR)
            label = "<" + "  ".join(p for p in [*parts, mark] if p) + ">"
            attrs.update(label=label, style="rounded,filled", color=NONFINITE_COLOR, penwidth="2.5")
        if c.id in self.overlay.box_time:
            attrs["label"] = _timed_box_label(attrs["label"], *self.overlay.box_time[c.id])
        for k, v in attrs.items():
            self.lines.append(f"{indent}  {k}={v if k == 'label' else quote(v)}")

    def _cluster_tip(self, c: Cluster) -> str:
        tip = f"{literal(c.title)} ({literal(c.cls)})\nparams: {c.params:,} (trainable {c.trainable_params:,})"
        if c.error:
            tip += f"\nerror: {literal(c.error)} (raised in its own code)"
        return tip

    def edge_stmt(self, e: GraphEdge) -> str:
        attrs: dict[str, str] = {}
        if e.skip:
            attrs.update(SKIP)
        if e.change is not None:
            attrs.update(DOWN if e.change[0] == "down" else UP)
            if e.skip:
                attrs["style"] = "dashed"
        attrs["xlabel" if self.xlabels else "label"] = _edge_label(e, self._printed_shape(e.src))
        attrs["tooltip"] = tooltip(_edge_tooltip(e, self.names, self.home))
        if e.src.startswith("cluster_") and self.layout != "u":
            attrs["ltail"] = e.src
        if e.src == e.dst and self.layout == "u":  # a loop over the node's top, clear of its neighbours in the row
            attrs.update(tailport="ne", headport="nw")
        return f"{self.tails.get(e.src, e.src)} -> {e.dst} {_attrs(attrs)}"

    def _printed_shape(self, src: str) -> tuple[int, ...] | None:
        """In the U layout, the output shape printed on node ``src`` (its edges need not repeat it)."""
        if self.layout != "u" or src not in self.by_id:
            return None
        n = self.by_id[src]
        printed = n.out_shapes if n.kind in ("call", "input") else []
        return printed[0] if len(printed) == 1 else None  # a folded loop's several shapes: edges say which


def cluster_tails(graph: Graph) -> dict[str, str]:
    """Each cluster's last node (in the graph's node order, inside it directly or in a box within it), which
    the edges leaving the cluster are drawn from; a cluster without nodes maps to itself. One pass over the
    nodes, each walking up its boxes: edges leaving boxes cost a look-up each, not a scan of every node."""
    parents = {c.id: c.parent for c in graph.clusters}
    tails = {c.id: c.id for c in graph.clusters}
    for n in graph.nodes:
        cl = n.cluster
        while cl is not None:
            tails[cl] = n.id
            cl = parents.get(cl)
    return tails


def _acyclic(ids: list[str], readers: dict[str, list[str]]) -> dict[str, list[str]]:
    """``readers`` without the edges that close a cycle (a depth-first search's back edges): a folded loop
    is drawn as a cycle, and the ranking below needs none."""
    state: dict[str, int] = {}  # 1: on the search's path, 2: done
    kept: dict[str, list[str]] = {a: [] for a in ids}
    for root in ids:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(readers.get(root, ())))]
        while stack:
            at, rest = stack[-1]
            b = next(rest, None)
            if b is None:
                state[at] = 2
                stack.pop()
            elif state.get(b) != 1:  # not back up the path: keep it
                kept[at].append(b)
                if b not in state:
                    state[b] = 1
                    stack.append((b, iter(readers.get(b, ()))))
    return kept


def label_crowding(graph: Graph, tails: dict[str, str] | None = None) -> int:
    """How crowded ``graph``'s long edges make dot's layout (see LABEL_CROWDING_LIMIT): on a longest-path
    ranking (a node one rank below its lowest input; a node without inputs, such as a constant, one rank
    above its first reader, as dot would place it), the number of edges passing each rank without stopping
    there, inside a box or between boxes, squared and summed over the ranks. A folded loop's cycle is ranked
    as if its edge back were not there. ``tails`` is ``cluster_tails(graph)``, when the caller has it."""
    tails = cluster_tails(graph) if tails is None else tails
    ids = [n.id for n in graph.nodes]
    known = set(ids)
    pairs = [(tails.get(e.src, e.src), e.dst) for e in graph.edges]
    pairs = [(a, b) for a, b in pairs if a in known and b in known and a != b]
    readers: dict[str, list[str]] = {}
    for a, b in pairs:
        readers.setdefault(a, []).append(b)
    readers = _acyclic(ids, readers)
    waiting = dict.fromkeys(ids, 0)
    for bs in readers.values():
        for b in bs:
            waiting[b] += 1
    rank = dict.fromkeys(ids, 0)
    ready = [a for a in ids if waiting[a] == 0]
    sources = set(ready)
    while ready:  # Kahn's topological order
        at = ready.pop()
        for b in readers[at]:
            rank[b] = max(rank[b], rank[at] + 1)
            waiting[b] -= 1
            if waiting[b] == 0:
                ready.append(b)
    for at in sources:
        if readers[at]:
            rank[at] = min(rank[b] for b in readers[at]) - 1
    low = min(rank.values(), default=0)
    passing = [0] * (max(rank.values(), default=0) - low + 2)  # differences: +1 where an edge starts passing
    for a, b in pairs:
        if rank[b] - rank[a] > 1:
            passing[rank[a] + 1 - low] += 1
            passing[rank[b] - low] -= 1
    crowding = now = 0
    for step in passing:
        now += step
        crowding += now * now
    return crowding


def _label_width(n: Node, style: str, marks: Sequence[str] = ()) -> float:
    """A generous estimate of a node's width in inches, from its label's longest line (``marks``: the small-print
    lines it carries besides its own, ``UNFED_MARK`` or its device)."""
    title = display_width(shown_name(n.title)) * 0.088
    small = [shown_name(n.cls), _shapes(n.out_shapes), *marks]  # 9-point small print
    if style == "detailed":
        small += [f"in{p}: {_shapes(n.shapes_of('in', p))}" for p, _ in n.inputs[:3]]
    return max([title, *(display_width(t) * 0.072 for t in small)]) + 0.35


def _u_positions(g: Graph, style: str, marks: dict[str, list[str]],
                 edge_labels: dict[tuple[str, str], str]) -> dict[str, tuple[float, float]]:
    """U layout: one row per resolution (largest on top), x advancing with event order (``marks``: node id -> the
    small-print lines it carries besides its own, for the width).

    Each node sits right of the previous node and clear of the last node already in its row, so the encoder
    steps down to the left, the decoder climbs back up on the right, and a skip runs straight across its row.
    """
    row_h = 1.4 if style == "compact" else 1.9
    gap, step = 0.22, 0.25
    labels: dict[tuple[str, str], float] = {}
    for key, label in edge_labels.items():
        width = (len(label) - 2) * 0.058 + (0.12 if len(label) > 2 else 0.0)  # text plus room for the arrowhead
        labels[key] = max(labels.get(key, 0.0), width)
    last_in_row: dict[int, tuple[float, float, str]] = {}  # rank -> (x, half width, node id)
    pos: dict[str, tuple[float, float]] = {}
    x_prev = None
    # The full-resolution tail after the decoder (PixelShuffle, merge, ResBlock, final conv, output) would make
    # one long top row; past its first few nodes it turns back along a row above the top row, right to left,
    # filling the space above the encoder instead of widening (or, as a column, heightening) the picture.
    deepest = max(range(len(g.nodes)), key=lambda i: (g.nodes[i].rank, -i), default=0)
    tail_start = len(g.nodes)
    while tail_start > deepest + 1 and g.nodes[tail_start - 1].rank == 0:
        tail_start -= 1
    column_from = tail_start + 2 if len(g.nodes) - tail_start > 4 else len(g.nodes)
    back: tuple[float, float] | None = None  # (x, half width) of the last node on the row above
    for i, n in enumerate(g.nodes):
        half = _label_width(n, style, marks.get(n.id, ())) / 2
        if i >= column_from and x_prev is not None:
            x = x_prev if back is None else back[0] - back[1] - half - gap - 0.25
            pos[n.id] = (x, row_h)
            back = (x, half)
            continue
        x = 0.0 if x_prev is None else x_prev + step
        if n.rank in last_in_row:
            lx, lhalf, lid = last_in_row[n.rank]
            x = max(x, lx + lhalf + half + gap + labels.get((lid, n.id), 0.0))
        pos[n.id] = (x, -n.rank * row_h)
        last_in_row[n.rank] = (x, half, n.id)
        x_prev = x
    return pos


def _legend_size(rows: list[tuple[str, str, str]]) -> tuple[float, float]:
    """A generous estimate of ``_legend``'s width and height in inches (its texts wrap as ``_wrap`` breaks them)."""
    titles = {title for title, _, _ in rows}
    wrapped = [_wrap(literal(text)) for _, _, text in rows]
    chars = max([len(line) for lines in wrapped for line in lines] + [display_width(t) for t in titles])
    width = chars * 0.085 + 0.6  # 10-point text, the swatch, the paddings and the two no-break spaces
    height = sum(len(lines) * 0.2 + 0.2 for lines in wrapped) + len(titles) * 0.3
    return width, height


def _u_legend_position(g: Graph, pos: dict[str, tuple[float, float]], style: str, marks: dict[str, list[str]],
                       rows: list[tuple[str, str, str]]) -> tuple[float, float]:
    """Where the U layout pins its legend (the centre, in inches): right of the rightmost node, its top level
    with the top row's, so it covers no node whatever its length."""
    if not pos:
        return 0.0, 0.0
    right = max(pos[n.id][0] + _label_width(n, style, marks.get(n.id, ())) / 2 for n in g.nodes if n.id in pos)
    top = max(y for _, y in pos.values()) + 0.4  # a node's half height, generously
    width, height = _legend_size(rows)
    return right + 0.5 + width / 2, top - height / 2


# ---- rendering ----------------------------------------------------------------------------------------------
# A title and, when the element carries a tooltip, the link Graphviz wraps it in, whose xlink:title it fills from
# the tooltip attribute after expanding escapes in it (Graphviz 2.43 expands an edge's twice, so a backslash in
# a name turned `\G` into the graph's name): both are rewritten from the description itself.
_LINK = r'(?:(\n<g id="a_[^"]*"><a xlink:title=")[^"]*("))?'
_TITLE = re.compile(r"<title>([A-Za-z0-9_]+)</title>" + _LINK)
# An edge's title names its ends as Graphviz wrote them, a port after a colon where an edge has one ("a:s").
_EDGE_TITLE = re.compile(r"<title>([A-Za-z0-9_]+)(?::[a-z_]+)?&#45;&gt;([A-Za-z0-9_]+)(?::[a-z_]+)?</title>" + _LINK)


def _titled(tip: str, match: re.Match, link_at: int) -> str:
    out = f"<title>{_xml_text(tip)}</title>"
    if match.group(link_at) is not None:
        if "\\" in tip:  # else Graphviz's own is right, and kept byte for byte
            attr = _xml_text(tip).replace('"', "&quot;").replace("\n", "&#10;")
            return out + f"{match.group(link_at)}{attr}{match.group(link_at + 1)}"
        whole = match.group(0)
        return out + whole[whole.index("</title>") + len("</title>"):]  # the link as Graphviz wrote it
    return out


def _svg_titles(svg: str, graph_tips: dict[str, str], edge_tips: dict[tuple[str, str], str]) -> str:
    """Give each node's, cluster's and edge's ``<title>`` and link title (the browser tooltip) its full
    description."""
    svg = _TITLE.sub(lambda m: _titled(graph_tips[m.group(1)], m, 2) if m.group(1) in graph_tips else m.group(0),
                     svg)
    return _EDGE_TITLE.sub(lambda m: _titled(edge_tips[(m.group(1), m.group(2))], m, 3)
                           if (m.group(1), m.group(2)) in edge_tips else m.group(0), svg)


_PDF_DATE = re.compile(rb"/(CreationDate|ModDate) \(D:(\d{1,14})([^)]*)\)")


def _epoch_dates(pdf: bytes) -> bytes:
    """The PDF with its creation and modification dates set to the epoch (1970-01-01 00:00, UTC).

    Graphviz builds on cairo older than 1.17 ignore ``SOURCE_DATE_EPOCH`` and write the time of the run. Each
    date keeps its length (digits for digits), so the cross-reference table's byte offsets stay right.
    """
    def epoch(m: re.Match) -> bytes:
        digits = b"19700101000000"[:len(m.group(2))]
        return b"/" + m.group(1) + b" (D:" + digits + re.sub(rb"\d", b"0", m.group(3)) + b")"

    return _PDF_DATE.sub(epoch, pdf)


def _nesting(graph: Graph) -> int:
    """How deep the graph's clusters nest (0: none), found without recursion."""
    parents = {c.id: c.parent for c in graph.clusters}
    depth: dict[str, int] = {}
    for start in parents:
        chain = []
        at: str | None = start
        while at is not None and at not in depth:
            chain.append(at)
            at = parents.get(at)
        below = depth[at] if at is not None else 0
        for cid in reversed(chain):
            below += 1
            depth[cid] = below
    return max(depth.values(), default=0)


# What dot says on stderr, exiting 0, when a bitmap would pass the renderer's largest size: it scales it to fit.
_SCALED = re.compile(r"too large for \S+ bitmaps\. Scaling by ([0-9.]+(?:e-?[0-9]+)?) to fit")


def render(trace: Trace, *, format: str = "svg", depth: int | None = None, layout: str | None = None,  # noqa: PLR0913 - the public keyword options of a diagram; RenderOptions carries them in the registry
           style: str | None = None, unroll: bool | None = None, overlays: Sequence[str] = (),
           options: dict[str, Any] | None = None, show_params: bool = False, all_ops: bool | None = None) -> bytes:
    """The diagram of ``trace`` as ``svg``, ``png``, ``pdf``, ``dot`` (or ``jpg``, ``gif``, ``webp``) bytes.

    Raises ``GraphvizNotFound`` (with the DOT text in ``.source``) when ``dot`` is not installed and the format
    needs it, and ``RuntimeError`` with Graphviz's message when ``dot`` fails.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    dot = _diagram(trace, depth, layout, style, unroll, overlays, options, show_params, all_ops)
    graph = dot.graph
    source = dot.text()
    if format == "dot":
        return source.encode("utf-8")
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizNotFound(source)
    nesting = _nesting(graph)
    if nesting > MAX_CLUSTER_NESTING:
        raise RuntimeError(f"the diagram nests boxes {nesting} deep, more than Graphviz's dot can read "
                           f"({MAX_CLUSTER_NESTING}); pass depth={MAX_CLUSTER_NESTING} (--depth "
                           f"{MAX_CLUSTER_NESTING}) or fewer to fold the deeper calls, or use the html format")
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0"}  # no creation dates in PDFs: same trace, same bytes
    try:
        proc = subprocess.run([exe, f"-T{format}"], input=source.encode("utf-8"), capture_output=True, env=env,
                              check=False, timeout=DOT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"Graphviz's dot gave up after {DOT_TIMEOUT_S:g} s on a diagram of {len(graph.nodes)} "
                           f"nodes and {len(graph.edges)} edges; pass depth=2 (--depth 2) to fold the inner layers "
                           "into their blocks, or draw one block on its own (trace the submodule)") from None
    if proc.returncode != 0:
        raise RuntimeError(f"Graphviz's dot failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    scaled = _SCALED.search(proc.stderr.decode(errors="replace"))
    if scaled:  # dot succeeded, but drew the bitmap smaller than asked, saying so only on its stderr
        warn_user(f"Graphviz drew the {format} diagram at {float(scaled.group(1)):.1%} of its size to fit its largest "
                  "bitmap (32,767 pixels a side): for a readable one write it as svg, or fold calls into their "
                  "blocks with a smaller depth (--depth)")
    if format == "pdf":
        return _epoch_dates(proc.stdout)
    if format != "svg":
        return proc.stdout
    tips = {n.id: tooltip(n.tooltip(dot.home)) for n in graph.nodes} | {c.id: tooltip(dot._cluster_tip(c))
                                                               for c in graph.clusters}
    edge_tips: dict[tuple[str, str], str] = {}
    for e in graph.edges:
        src = dot.tails.get(e.src, e.src)
        tip = tooltip(_edge_tooltip(e, dot.names, dot.home))
        key = (src, e.dst)
        edge_tips[key] = edge_tips[key] + "\n" + tip if key in edge_tips else tip
    return _svg_titles(proc.stdout.decode("utf-8"), tips, edge_tips).encode("utf-8")
