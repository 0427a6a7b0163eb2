"""The data-flow graph of a trace, ready for a diagram: visible nodes, clusters and edges, with label facts.

``build_graph(trace, depth=..., unroll=...)`` is pure: it reads a ``Trace`` (plain data) and returns a
``Graph`` (plain data). It never imports torch and knows nothing of Graphviz; ``diagram.py`` styles it.

What is visible
---------------
* A call deeper than ``depth`` folds into its ancestor at ``depth``. A call at the depth limit, or one with
  nothing inside it (no child calls, no recorded ops), is a *node*; a call above the limit with content is a
  *cluster* (a box around its children). The root call is never drawn as a box: the whole picture is it.
  ``fold`` names modules (qualified name or class name) always drawn as single nodes.
* Functional ops recorded in an expanded container's forward (or outside every module) are nodes; ops inside
  a folded call belong to that call's node.
* One input node per forward argument, one output node per tensor the model returns.
* A forward that failed in a container's own code (``torch.cat`` in a block's ``forward``, a ``view`` in the
  model's) gets a *failure* node inside that container's box (at top level for the model itself), after what
  ran, fed by the tensors nothing drawn consumed: the outputs still unused there and the container's own
  arguments that none of its drawn calls read. The box is marked failed (``Cluster.error``). A failure in a
  call drawn as a node (a leaf, or a container folded by ``depth``) marks that node instead (``Node.error``).

Edges come from ``Trace.edges``: each end is mapped to its visible node; an edge between two calls folded into
one node (a recurrent cell's state, carried from one step to the next) is kept as a loop on it, while what flows
inside one call and edges into expanded containers (their children carry the tensor) are dropped; the rest
are merged per (source, target). An edge that carries a tensor some call read as a *side input* (not through
its arguments, e.g. a U-Net skip read from a hook) is marked ``skip``. ``change`` marks a tensor resampled
from the inputs of the call that made it (``_resampled``): read against the first input of another spatial size,
broadcast inputs (all spatial dims 1) left out and, when the output keeps one input's size, only inputs it was
computed from (``_derived``) counted.

Op detail: by default (``all_ops=False``) only the ops that compute with the data are drawn: those that
combine or reshape it (``cat``, ``add``, ``mul``, ``matmul``, ``view``, ``interpolate``, pooling, reductions,
activations, ...). An op that only indexes, casts or creates a constant (``GLUE_OPS``: ``getitem``, ``long``,
``to``, ``eq``, ``masked_fill``, ``new_zeros``, ``arange``, ...) is folded into the edges it feeds, and so is
any op computed from such ops alone (the arithmetic of lengths and masks). Glue is followed per recorded op along
the trace's edges (``_raw_reach``), not per drawn node, so a loop of glue folded into one node joins no paths; an
index read from data (``argmax``) carries that data's edge. An edge that passed through folded ops says so
(``GraphEdge.via``); a node that reads a folded constant lists it (``Node.constants``).
``all_ops=True`` draws every recorded op.

Loops: calls of the same module repeated in a loop (a block of sibling events, e.g. ``getitem, lstm`` four
times) fold into one node marked with ``count`` (drawn ×N); the matching calls' children merge too, so an
expanded looped container stays one box. Which events repeat is ``loops.find_loops``'s job: a block of ops
alone folds from ``loops.MIN_OP_REPEATS`` repeats on, a short one only with the same shapes each time and each
iteration reading the one before; inner
loops fold first, never across an outer iteration. ``unroll=True`` keeps every call apart. A module used twice among
*different* sibling calls (the shared ReLU of a ResNet block) is not a loop and is not folded. Calls of one
module straight after one another (``x = self.pool(x)`` twice) read like a loop in a trace and fold too, unless
the trace has source lines (``trace(..., lines=True)``): then only calls made from the same line fold. A folded
node keeps every call's shapes (``Node.out_shapes``, ``Node.shapes_of``), which differ when the iterations
did (the AWD-LSTM's chunks of different lengths, a pooling applied twice).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..tracer.records import Call, TensorMeta, Trace, iter_tensors
from ..tracer.user_warnings import warn_user
from .loops import find_loops
from .units import (
    call_error_text,
    failing_calls,
    format_bytes,
    format_count,
    format_ms,
    format_shape,
    literal,
    off_home,
)

__all__ = [
    "GLUE_OPS",
    "MAX_NODES",
    "Cluster",
    "Graph",
    "GraphEdge",
    "Node",
    "build_graph",
    "format_bytes",
    "format_count",
    "format_shape",
    "literal",
    "spatial",
]

MAX_NODES = 500  # past this many nodes a diagram warns and suggests a depth
# The largest stride read from sizes that do not divide (15 -> 7 is ↓2): one layer's stride. A folded body that
# takes 224 to 13 through several strided layers fits ↓17 by rounding, which no layer did, so it is left unmarked.
_MAX_ROUNDED_STRIDE = 4
_MAX_DERIVED_WALK = 20000  # tensors walked back to tell which inputs an output came from, at most

# Ops that only index, cast, compare (to make masks) or create constants: folded into the edges they feed
# unless all_ops=True. Names as the op recorder writes them (dunder and in-place forms are normalised).
GLUE_OPS = frozenset({
    # indexing and masking
    "getitem", "setitem", "index", "index_select", "select", "narrow", "gather", "take", "masked_fill",
    "masked_select", "nonzero", "argmax", "argmin", "argsort", "topk_indices", "size", "dim", "numel",
    "expand", "expand_as", "broadcast_to", "unbind", "split", "chunk", "item", "tolist",
    # comparisons and logic (mask making)
    "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not", "logical_xor", "isnan",
    "isinf", "isfinite", "any", "all", "invert", "and", "or", "xor",
    # casts and copies
    "to", "type", "type_as", "long", "int", "short", "float", "double", "half", "bfloat16", "bool", "byte",
    "char", "cpu", "cuda", "contiguous", "detach", "clone", "requires_grad", "data",
    # constants
    "new_zeros", "new_ones", "new_full", "new_empty", "new_tensor", "zeros", "ones", "full", "empty",
    "zeros_like", "ones_like", "full_like", "empty_like", "arange", "range", "linspace", "eye", "tensor",
    "as_tensor", "rand", "randn", "randint", "rand_like", "randn_like", "randint_like",
})


# Glue whose output carries no data of its own: masks and constants. Indices read from data (``argmax``,
# ``nonzero``, ``argsort``) are not among them: they carry an edge from that data (greedy decoding's
# ``fc -> log_softmax -> argmax -> emb``).
_MASK_OR_CONSTANT = frozenset({
    "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not", "logical_xor", "isnan",
    "isinf", "isfinite", "any", "all", "invert", "size", "dim", "numel", "new_zeros", "new_ones", "new_full",
    "new_empty", "new_tensor", "zeros", "ones", "full", "empty",
    "zeros_like", "ones_like", "full_like", "empty_like", "arange", "range", "linspace", "eye", "tensor",
    "as_tensor", "rand", "randn", "randint", "rand_like", "randn_like", "randint_like",
})


# Glue that picks from its first argument with the tensors in the others (an index, a mask of positions): a
# node that supplied only such an index feeds the reader the index, not the data picked.
INDEX_OPS = frozenset({"getitem", "index", "index_select", "gather", "take", "take_along_dim", "masked_select"})

# What a drawn node's data does on its way to a folded glue op: (the folded ops passed, the node's iteration,
# ``None`` when it flows on as data, else (the indexing op, the index tensors) it only chose with).
_Reach = tuple[list[str], "int | None", "tuple[str, list[int]] | None"]


def _reach_into(found: dict[str, _Reach], src: str, reach: _Reach) -> None:
    """Record one way ``src`` reaches an op; the first path is kept, and data wins over an index."""
    old = found.get(src)
    if old is None:
        found[src] = reach
    elif old[2] is not None and reach[2] is None:
        found[src] = (old[0], old[1], None)


def op_base_name(name: str) -> str:
    """An op's name without dunders or the in-place underscore: ``__getitem__`` -> ``getitem``,
    ``masked_fill_`` -> ``masked_fill``, ``torch.cat`` -> ``cat``."""
    base = name.rsplit(".", 1)[-1].strip("_")
    return base[1:] if base.startswith("i") and base[1:] in {"add", "sub", "mul", "and", "or"} else base


def is_glue_op(name: str) -> bool:
    """Whether an op only indexes, casts or creates constants (see ``GLUE_OPS``)."""
    return op_base_name(name) in GLUE_OPS


@dataclass
class Node:
    """One box (or ellipse) of the diagram.

    ``kind`` is ``"call"``, ``"op"``, ``"input"``, ``"output"`` or ``"failure"`` (where a container's own code
    raised; ``error`` says what). ``calls`` are the calls drawn exactly as
    this node (several when a loop was folded: ``count`` of them); ``folded`` adds their descendants (the
    calls hidden inside it by ``depth``). ``cluster`` is the id of the box around it, ``None`` at top level.
    """

    id: str
    kind: str
    name: str
    cls: str
    order: int
    cluster: str | None = None
    count: int = 1
    calls: list[int] = field(default_factory=list)
    folded: list[int] = field(default_factory=list)
    ops: list[int] = field(default_factory=list)
    module: str = ""
    collapsed: bool = False  # a container drawn as one node (depth or fold)
    inputs: list = field(default_factory=list)  # (path, TensorMeta) of the first call / op
    outputs: list = field(default_factory=list)
    # the inputs and outputs of each call / op drawn as this node (one entry each; several for a folded loop)
    all_inputs: list = field(default_factory=list)
    all_outputs: list = field(default_factory=list)
    params: int = 0
    trainable_params: int = 0
    self_ms: float | None = None
    total_ms: float | None = None
    peak_bytes: int | None = None
    activation_bytes: int = 0
    flops: int | None = None
    error: str | None = None
    # what a call drawn as this node raised and the forward caught (it went on: a fallback after a fast path),
    # drawn apart from a failure
    caught: str | None = None
    rank: int = 0
    resolution: int | None = None
    constants: list[str] = field(default_factory=list)  # folded mask- or constant-making op chains it reads

    @property
    def out_shape(self) -> tuple[int, ...] | None:
        """The first call's first output shape (see ``out_shapes`` for a folded loop's)."""
        return self.outputs[0][1].shape if self.outputs else None

    @property
    def out_shapes(self) -> list[tuple[int, ...]]:
        """The distinct shapes of the first output over every call folded into this node, in call order (one
        unless a folded loop's iterations made different shapes)."""
        return self.shapes_of("out", self.outputs[0][0]) if self.outputs else []

    def shapes_of(self, side: str, path: str) -> list[tuple[int, ...]]:
        """The distinct shapes of the input (``side`` ``"in"``) or output (``"out"``) at ``path`` over every
        call folded into this node, in call order."""
        values = (self.all_inputs or [self.inputs]) if side == "in" else (self.all_outputs or [self.outputs])
        shapes: list[tuple[int, ...]] = []
        for items in values:
            for p, meta in items:
                if p == path and tuple(meta.shape) not in shapes:
                    shapes.append(tuple(meta.shape))
        return shapes

    def devices_of(self, side: str, path: str, home: str | None) -> str:
        """The devices of the input (``side`` ``"in"``) or output (``"out"``) at ``path`` over every call folded
        into this node, as a text (``meta``, ``cpu, meta``), when any is not ``home``; ``""`` otherwise."""
        values = (self.all_inputs or [self.inputs]) if side == "in" else (self.all_outputs or [self.outputs])
        devices = list(dict.fromkeys(meta.device for items in values for p, meta in items if p == path))
        return off_home(devices, home)

    @property
    def title(self) -> str:
        """The node's name with its loop count: ``rnn ×4``."""
        return self.name if self.count == 1 else f"{self.name} ×{self.count}"

    def tooltip(self, home: str | None = None) -> str:
        """Plain multi-line text: the full shapes of every input and output, parameters, timings, memory.

        ``home``: the trace's device (``units.home_device``); a tensor elsewhere is said to be (``on meta``), as
        the node's label and the table say it. ``None``: no device is said."""
        if self.kind == "failure":
            return f"{literal(self.title)}: failed in its own code, after the calls drawn before this mark\n" \
                   f"error: {literal(self.error or '')}"
        head = literal(self.title) if self.kind in ("input", "output") else f"{literal(self.title)} ({literal(self.cls)})"
        lines = [head]
        for side, items in (("in", self.inputs), ("out", self.outputs)):
            for path, meta in items:  # every shape a folded loop's calls had there, in call order
                shapes = [format_shape(s, sep=", ", paren=True) for s in self.shapes_of(side, path)]
                shown = shapes if len(shapes) <= 8 else [*shapes[:7], f"… +{len(shapes) - 7}"]
                where = self.devices_of(side, path, home)
                lines.append(f"{side}{path}: {' | '.join(shown)} {meta.dtype}" + (f" on {where}" if where else ""))
        if self.kind == "call":
            lines.append(f"params: {self.params:,} (trainable {self.trainable_params:,})")
            if self.collapsed:
                lines.append(f"folds {len(self.folded) - len(self.calls)} inner calls")
        if self.self_ms is not None:
            over = f" over {self.count} calls" if self.count > 1 else ""
            lines.append(f"time: {format_ms(self.self_ms)} ms{over}")
        if self.peak_bytes is not None:
            lines.append(f"peak memory: {format_bytes(self.peak_bytes)}")
        if self.activation_bytes:
            lines.append(f"activations: {format_bytes(self.activation_bytes)}")
        if self.flops:
            lines.append(f"FLOPs: {self.flops:,}")
        if self.constants:
            lines.append("also reads masks or constants (folded; all ops shows them): "
                         + "; ".join(literal(c) for c in self.constants))
        if self.error:
            lines.append(f"error: {literal(self.error)}")
        elif self.caught:
            lines.append(f"raised, and the forward caught it and went on: {literal(self.caught)}")
        return "\n".join(lines)


@dataclass
class Cluster:
    """A container call drawn as a box around its children (``count`` > 1 for a folded loop)."""

    id: str
    name: str
    cls: str
    order: int
    parent: str | None = None
    count: int = 1
    calls: list[int] = field(default_factory=list)
    params: int = 0
    trainable_params: int = 0
    error: str | None = None  # the exception its own code raised (the forward failed there)

    @property
    def title(self) -> str:
        return self.name if self.count == 1 else f"{self.name} ×{self.count}"


@dataclass
class GraphEdge:
    """Tensors flowing from node ``src`` to node ``dst`` (``src`` may be a cluster id: a container passing a
    value through). ``shapes`` are the distinct shapes carried; ``count`` the distinct tensors (``tids``);
    ``change`` is ``("down", f)`` / ``("up", f)`` when the spatial size shrinks / grows by ``f``."""

    src: str
    dst: str
    shapes: list[tuple[int, ...]]
    dtype: str
    count: int = 1
    skip: bool = False
    change: tuple[str, int] | None = None
    tids: list[int] = field(default_factory=list)
    via: list[str] = field(default_factory=list)  # folded ops the tensors passed through on the way
    dtypes: list[str] = field(default_factory=list)  # per shape in ``shapes`` (``dtype`` for all when empty)
    index_into: list[str] = field(default_factory=list)  # folded indexing ops it fed an index, not data, to
    index_shapes: list[tuple[int, ...]] = field(default_factory=list)  # of ``shapes``, those of such indices
    devices: list[str] = field(default_factory=list)  # the devices of the tensors it carries, first seen first

    def carry(self, shape: tuple[int, ...], dtype: str) -> None:
        """Add a shape the edge carries (each distinct shape once), with its dtype."""
        if len(self.dtypes) != len(self.shapes):
            self.dtypes = [self.dtype] * len(self.shapes)
        if shape not in self.shapes:
            self.shapes.append(shape)
            self.dtypes.append(dtype)
        elif dtype not in self.dtypes[i := self.shapes.index(shape)].split("/"):
            self.dtypes[i] += f"/{dtype}"

    def dtype_of(self, k: int) -> str:
        """The dtype of ``shapes[k]``."""
        return self.dtypes[k] if len(self.dtypes) == len(self.shapes) else self.dtype


@dataclass
class Graph:
    """Nodes in event order, clusters, and merged edges. ``levels`` is the number of U-layout ranks."""

    nodes: list[Node]
    clusters: list[Cluster]
    edges: list[GraphEdge]
    depth: int | None
    unroll: bool
    levels: int = 1
    all_ops: bool = True
    folded_ops: int = 0  # op nodes folded into edges (all_ops=False)
    # Call nodes that received tensors yet have no edge into them, in a trace that recorded no functional ops
    # (``trace(..., ops=False)``): what fed them was made by an op between two module calls (``x.flatten(1)``),
    # which such a trace has no record of. Drawn marked, so the gap does not read as a layer fed by nothing.
    unfed: list[str] = field(default_factory=list)

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def find(self, name: str) -> list[Node]:
        """Nodes whose name (module name, op name, ``input:0``) is ``name``."""
        return [n for n in self.nodes if n.name == name]

    def adjacency(self) -> set[tuple[str, str]]:
        """``(src name, dst name)`` of every edge, by node names (clusters by their name)."""
        names = {n.id: n.name for n in self.nodes} | {c.id: c.name for c in self.clusters}
        return {(names[e.src], names[e.dst]) for e in self.edges}


# ---- small helpers shared with diagram.py (the formatting lives in units.py) --------------------------
def spatial(shape: Sequence[int]) -> tuple[int, ...] | None:
    """The spatial dims of an image-like tensor (``N, C, H, W`` or ``N, C, D, H, W``), else ``None``."""
    return tuple(shape[2:]) if len(shape) >= 4 else None


def _tensors(value: object) -> list[tuple[str, TensorMeta]]:
    return list(iter_tensors(value))


# ---- building ---------------------------------------------------------------------------------------------
class _Builder:
    def __init__(self, trace: Trace, depth: int | None, unroll: bool, fold: Iterable[str],
                 all_ops: bool = True) -> None:
        self.trace = trace
        self.failing = failing_calls(trace)
        self.all_ops = all_ops
        self.depth = depth
        self.unroll = unroll
        self.fold = set(fold)
        self.calls = trace.calls
        self.children: dict[int | None, list[tuple[int, str, int]]] = {}  # parent -> [(order, "c"/"o", id)]
        for c in trace.calls:
            self.children.setdefault(c.parent, []).append((c.start, "c", c.id))
        for o in trace.ops:
            self.children.setdefault(o.call, []).append((o.order, "o", o.id))
        for evs in self.children.values():
            evs.sort()
        self.nodes: dict[str, Node] = {}
        self.clusters: dict[str, Cluster] = {}
        self.vis_call: dict[int, str] = {}  # call id -> node or cluster id
        self.vis_op: dict[int, str] = {}
        self.key_ids: dict[tuple, str] = {}  # folding key -> node/cluster id
        self.made: dict[int, list[tuple[int, tuple[int, ...], int | None]]] = {}  # id(edge) -> (tid, shape, maker's
        # iteration) per tensor it carries
        self.iterations: dict[tuple[str, int], int] = {}  # ("c"/"o", id) -> its index in its node's calls / ops
        self.raw_inputs: dict[str, list[str]] = {}  # "op:<id>" -> the raw producers of what it read
        self.reached: dict[str, dict[str, _Reach]] = {}  # "op:<id>" -> _raw_reach
        self.producer: dict[int, str] = {}  # tid -> the raw endpoint that made it
        self.reads: dict[str, list[int]] = {}  # raw endpoint -> the tids it read
        self.derived: dict[tuple[int, frozenset[int]], set[int] | None] = {}  # _derived's answers, asked once
        raw_pairs: set[tuple[str, str]] = set()  # (op, producer) pairs in raw_inputs: each listed once
        self.consumers: dict[int, list[str]] = {}  # tid -> the raw endpoints that read it
        self.metas: dict[int, tuple[tuple[int, ...], str]] = {}  # tid -> (shape, dtype)
        self.supplied: dict[tuple[str, str], list[int]] = {}  # (op, producer) -> the tids the op read from it
        for e in trace.edges:
            self.producer.setdefault(e.tid, e.src)
            self.reads.setdefault(e.dst, []).append(e.tid)
            self.consumers.setdefault(e.tid, []).append(e.dst)
            self.metas.setdefault(e.tid, (tuple(e.shape), e.dtype))
            if e.dst.startswith("op:"):
                self.supplied.setdefault((e.dst, e.src), []).append(e.tid)
            if e.dst.startswith("op:") and (e.dst, e.src) not in raw_pairs:
                raw_pairs.add((e.dst, e.src))
                self.raw_inputs.setdefault(e.dst, []).append(e.src)

    # which calls are boxes
    def is_cluster(self, c: Call) -> bool:
        if not self.children.get(c.id):
            return False
        if self.depth is not None and c.depth >= self.depth:
            return False
        return not (c.module in self.fold or c.cls in self.fold or any(a in self.fold for a in c.aliases))

    def token(self, kind: str, i: int) -> str:
        """What a sibling event must match to repeat another: its module (or op name) and, when the trace has
        source lines, the line that made it, so that straight-line calls of one module are not taken for a
        loop."""
        event = self.calls[i] if kind == "c" else self.trace.ops[i]
        name = f"c:{event.module}" if kind == "c" else f"o:{event.name}"
        return name if event.line is None else f"{name}@{event.line}"

    def local_keys(self, events: list[tuple[int, str, int]]) -> list[tuple]:
        """A key per sibling event; events repeated in a loop share the key of their first iteration.

        Loops are found by ``loops.find_loops``: inner loops first, an inner loop counting as one step of an outer
        body; a body of ops alone only when it repeats often enough with the same shapes."""
        if self.unroll:
            return [(k, i) for _, k, i in events]
        tokens = [self.token(k, i) for _, k, i in events]
        signatures = [() if k == "c" else tuple(tuple(m.shape) for _, m in _tensors(self.trace.ops[i].outputs))
                      for _, k, i in events]
        slots = find_loops(tokens, signatures, [t.startswith("c:") for t in tokens], self._sibling_reads(events))
        keys: list[tuple] = [()] * len(tokens)
        seen: dict[str, int] = {}
        for slot in slots:  # one key per event of the first iteration, shared by its repeats
            t = tokens[slot[0]]
            seen[t] = seen.get(t, 0) + 1
            for j in slot:
                keys[j] = (t, seen[t] - 1)
        return keys

    def _sibling_reads(self, events: list[tuple[int, str, int]]) -> list[set[int]]:
        """Per sibling event, the siblings (by index) whose outputs it read, from the trace's edges."""
        index = {f"{'call' if k == 'c' else 'op'}:{i}": j for j, (_, k, i) in enumerate(events)}
        return [{index[src] for tid in self.reads.get(f"{'call' if k == 'c' else 'op'}:{i}", [])
                 if (src := self.producer.get(tid)) in index} for _, k, i in events]

    def walk(self, parent: int | None, pkey: tuple, cluster: str | None, into: str | None) -> None:
        """Visit the events under ``parent`` depth first, in event order, with a stack of its own: a chain of
        calls nested thousands deep is drawn like any other (no recursion limit)."""
        stack = [self._frame(parent, pkey, cluster, into)]
        while stack:
            items, frame_key, frame_cluster, frame_into = stack[-1]
            item = next(items, None)
            if item is None:
                stack.pop()
                continue
            inner = self.visit(item, frame_key, frame_cluster, frame_into)
            if inner is not None:
                stack.append(self._frame(*inner))

    def _frame(self, parent: int | None, pkey: tuple, cluster: str | None, into: str | None) -> tuple:
        """What ``walk`` keeps per level: the events under ``parent`` with their keys still to visit, and where
        they go."""
        events = self.children.get(parent, [])
        keys = self.local_keys(events) if into is None else [()] * len(events)
        return iter(list(zip(events, keys))), pkey, cluster, into

    def visit(self, item: tuple, pkey: tuple, cluster: str | None, into: str | None) -> tuple | None:
        """Draw one event (an op or a call) under its parent; for a call, the arguments to walk its own events
        with (``None`` for an op)."""
        (_, kind, i), lk = item
        key = (*pkey, lk)
        if kind == "o":
            if into is not None:
                self.vis_op[i] = into
                self.nodes[into].ops.append(i)
                return None
            op = self.trace.ops[i]
            nid = self.key_ids.get(key)
            if nid is None:
                nid = self.key_ids[key] = f"o{i}"
                self.nodes[nid] = Node(nid, "op", op.name, op.name, op.order, cluster,
                                       inputs=_tensors(op.inputs), outputs=_tensors(op.outputs), count=0)
            node = self.nodes[nid]
            node.count += 1
            node.ops.append(i)
            node.all_inputs.append(_tensors(op.inputs))
            node.all_outputs.append(_tensors(op.outputs))
            self.vis_op[i] = nid
            return None
        c = self.calls[i]
        if into is not None:
            self.vis_call[i] = into
            self.nodes[into].folded.append(i)
            return (i, key, cluster, into)
        if self.is_cluster(c) and c.parent is not None:
            cid = self.key_ids.get(key)
            if cid is None:
                cid = self.key_ids[key] = f"cluster_c{i}"
                self.clusters[cid] = Cluster(cid, c.label if self.unroll else (c.module or "(root)"), c.cls,
                                             c.start, cluster, 0, params=c.params,
                                             trainable_params=c.trainable_params)
            cl = self.clusters[cid]
            cl.count += 1
            cl.calls.append(i)
            self.vis_call[i] = cid
            return (i, key, cid, None)
        elif self.is_cluster(c):  # the root: its children are the top level
            self.vis_call[i] = ""
            return (i, key, None, None)
        else:
            nid = self.key_ids.get(key)
            if nid is None:
                nid = self.key_ids[key] = f"c{i}"
                name = c.label if self.unroll else (c.module or "(root)")
                self.nodes[nid] = Node(nid, "call", name, c.cls, c.start, cluster, count=0, module=c.module,
                                       collapsed=bool(self.children.get(i)), inputs=_tensors(c.inputs) + _tensors(c.kwargs),
                                       outputs=_tensors(c.outputs), params=c.params,
                                       trainable_params=c.trainable_params)
            node = self.nodes[nid]
            node.count += 1
            node.calls.append(i)
            node.folded.append(i)
            error = call_error_text(self.trace, c)
            if error is not None and c.id not in self.failing:  # raised, and the forward caught it
                node.caught = node.caught or error
            elif node.error is None:  # this call, or a later one folded into the node, failed: drawn failed
                node.error = error
            node.all_inputs.append(_tensors(c.inputs) + _tensors(c.kwargs))
            node.all_outputs.append(_tensors(c.outputs))
            self.vis_call[i] = nid
            return (i, key, cluster, nid)

    def io_nodes(self) -> None:
        t = self.trace
        sources = [e.src for e in t.edges if e.src.startswith("input:")]
        names = [f"input:{i}" for i, v in enumerate(t.inputs) if _tensors(v)]
        names += [f"input:{k}" for k, v in t.kwargs.items() if _tensors(v)]
        for s in sources:
            if s not in names:
                names.append(s)
        for j, name in enumerate(names):
            key = name.partition(":")[2]
            value = t.inputs[int(key)] if key.isdigit() and int(key) < len(t.inputs) else t.kwargs.get(key)
            metas = _tensors(value)
            nid = f"in{j}"
            label = "input" if len(names) == 1 else (f"input {key}" if not key.isdigit() else f"input {int(key)}")
            self.nodes[nid] = Node(nid, "input", label, "input", -len(names) + j, outputs=metas)
            self.vis_input[name] = nid
        end = max((c.end or c.start for c in t.calls), default=0) + 1
        outs = [e.dst for e in t.edges if e.dst.startswith("output:")]
        metas = dict(_tensors(t.outputs))
        seen: list[str] = []
        for o in outs:
            if o not in seen:
                seen.append(o)
        for j, name in enumerate(seen):
            path = name.partition(":")[2]
            meta = metas.get("" if path == "out" else path)
            nid = f"out{j}"
            label = "output" if len(seen) == 1 else f"output{path}"
            self.nodes[nid] = Node(nid, "output", label, "output", end + j,
                                   inputs=[("", meta)] if meta is not None else [])
            self.vis_output[name] = nid

    def build(self) -> Graph:
        self.vis_input: dict[str, str] = {}
        self.vis_output: dict[str, str] = {}
        self.walk(None, (), None, None)
        self.io_nodes()
        self.facts()
        edges = self.map_edges()
        folded = 0 if self.all_ops else self.fold_glue(edges)
        edges = [e for e in edges if e.src in self.nodes or e.src in self.clusters]
        # An op that neither consumed nor fed anything drawn (a parameter's .detach(), an unused
        # temporary) says nothing about the data flow: leave it out.
        linked = {e.src for e in edges} | {e.dst for e in edges}
        for node_id in [n.id for n in self.nodes.values() if n.kind == "op" and n.id not in linked]:
            del self.nodes[node_id]
        self.failure_node(edges)
        self.edge_devices(edges)
        nodes = sorted(self.nodes.values(), key=lambda n: (n.order, n.id))
        unfed: list[str] = []
        if self.trace.meta.get("ops") is False:  # recorded without ops (a trace that says nothing: not marked)
            fed = {e.dst for e in edges}
            unfed = [n.id for n in nodes if n.kind == "call" and n.inputs and n.id not in fed]
        graph = Graph(nodes, sorted(self.clusters.values(), key=lambda c: (c.order, c.id)), edges,
                      self.depth, self.unroll, all_ops=self.all_ops, folded_ops=folded, unfed=unfed)
        _rank(graph)
        return graph

    def edge_devices(self, edges: list[GraphEdge]) -> None:
        """Each edge's ``devices``: those of the tensors it carries (the edge records keep none; the tensors'
        metadata does, found by ``tid``). Left empty where the trace has one device (nothing to say)."""
        t = self.trace
        device_of: dict[int, str] = {}
        values = [t.inputs, t.kwargs, t.outputs, *([c.inputs, c.kwargs, c.side_inputs, c.outputs] for c in t.calls),
                  *([o.inputs, o.outputs] for o in t.ops)]
        for _, meta in iter_tensors(values):
            if meta.tid is not None:
                device_of.setdefault(meta.tid, meta.device)
        if len(set(device_of.values())) < 2:
            return
        for ge in edges:
            if ge.tids:
                ge.devices = list(dict.fromkeys(device_of[tid] for tid in ge.tids if tid in device_of))
            elif ge.src in self.nodes:  # a failure's feed: the outputs of its source, not traced by tid
                ge.devices = list(dict.fromkeys(m.device for _, m in self.nodes[ge.src].outputs))

    def failure_node(self, edges: list[GraphEdge]) -> None:
        """Where the forward failed in a drawn container's own code (a cluster's, or the model's: the root is
        the picture), a ``failure`` node after what ran inside it, fed by the tensors nothing drawn consumed;
        the cluster is marked failed. A failure in a call drawn as a node is that node's ``error``."""
        failure = self.trace.failure
        if failure is None:
            return
        fid = failure.call
        where = self.vis_call.get(fid) if fid is not None else ""
        if where is None or where in self.nodes:
            return  # drawn as a node: its label says it
        call = self.calls[fid] if fid is not None else None
        error = call_error_text(self.trace, call) if call is not None else failure.text
        container = where or None  # None: the top level
        if container is not None:
            self.clusters[container].error = error
        inside = [n for n in self.nodes.values() if n.kind != "output"
                  and (container is None or (n.kind != "input" and self._inside(n.id, container)))]
        used = {e.src for e in edges}
        passed_out = [c for c in used if c in self.clusters]  # boxes whose own code made what they returned
        feeds: dict[str, GraphEdge] = {}
        for n in inside:
            if n.id in used or not n.outputs or any(self._inside(n.id, c) for c in passed_out):
                continue
            shapes = list(dict.fromkeys(tuple(m.shape) for _, m in n.outputs))
            feeds[n.id] = GraphEdge(n.id, "", shapes, n.outputs[0][1].dtype, len(n.outputs))
        if call is not None and container is not None:  # its own arguments that none of its drawn calls read
            read_inside = {e.tid for e in self.trace.edges if e.dst != f"call:{fid}"
                           and (dst := self.endpoint(e.dst)) is not None and dst in self.nodes
                           and self._inside(dst, container)}
            for e in self.trace.edges:
                src = self.endpoint(e.src)
                if e.dst != f"call:{fid}" or e.tid in read_inside or src is None or src in feeds:
                    continue
                feeds[src] = GraphEdge(src, "", [tuple(e.shape)], e.dtype, 1, tids=[e.tid])
        order = max((n.order for n in inside), default=call.start if call is not None else 0) + 1
        name = f"{call.cls if call is not None else self.trace.model.cls}.forward"
        nid = f"failed{fid if fid is not None else ''}"
        self.nodes[nid] = Node(nid, "failure", name, "", order, container, error=error,
                               calls=[fid] if fid is not None else [])
        for ge in feeds.values():
            ge.dst = nid
            edges.append(ge)

    def fold_glue(self, edges: list[GraphEdge]) -> int:  # noqa: C901 - to split: one pass per kind of glue op
        """Fold glue ops (``GLUE_OPS``, and ops computed from glue alone) into the edges they feed, in place.

        An edge ``glue -> d`` becomes ``s -> d`` for every drawn node ``s`` that reaches the glue op through
        glue ops only, carrying what ``d`` receives and naming the folded ops in ``via``; a glue op reached from
        no drawn node (a constant) is listed in ``d.constants``. Returns the number of op nodes folded."""
        preds: dict[str, list[GraphEdge]] = {}
        for e in edges:
            preds.setdefault(e.dst, []).append(e)
        glue: dict[str, bool] = {}  # glue op id -> whether data (not only masks or constants) passes through
        for n in sorted(self.nodes.values(), key=lambda n: (n.order, n.id)):  # producers first
            if n.kind != "op":
                continue
            ins = preds.get(n.id, [])
            carries = any(e.src not in glue or glue[e.src] for e in ins)
            base = op_base_name(n.name)
            if base in _MASK_OR_CONSTANT:
                glue[n.id] = False
            elif base in GLUE_OPS:
                glue[n.id] = carries
            elif ins and not carries:  # arithmetic on masks and lengths only
                glue[n.id] = False
        if not glue:
            return 0
        titles = {gid: self.nodes[gid].title for gid in glue}
        kept = [e for e in edges if e.src not in glue and e.dst not in glue]
        merged = {(e.src, e.dst, e.skip): e for e in kept}
        for e in edges:
            if e.src not in glue or e.dst in glue:
                continue
            shapes = {tid: shape for tid, shape, _ in self.made.get(id(e), [])}
            reached = [(tid, shapes.get(tid), self._raw_reach(self.producer.get(tid), glue)) for tid in e.tids]
            if not any(sources for _, _, sources in reached):
                dst = self.nodes.get(e.dst)
                chain = " → ".join(self._glue_chain(e.src, preds, glue, titles))
                if dst is not None and chain not in dst.constants:
                    dst.constants.append(chain)
                continue
            for tid, shape, sources in reached:  # per recorded tensor: a folded loop of glue joins no paths
                for src, (path, fed, index) in sources.items():
                    if src == e.dst and not self._fed_back(tid, e.dst, fed):
                        continue
                    if src in self.clusters and e.dst in self.nodes and self._inside(e.dst, src):
                        continue
                    # what the source supplied: the data d receives, or only the index that picked it
                    carried = [(tid, shape)] if index is None else [(t, self.metas[t][0]) for t in index[1]]
                    ge = merged.get((src, e.dst, e.skip))
                    if ge is None:
                        dtype = e.dtype if index is None else self.metas[index[1][0]][1]
                        ge = merged[(src, e.dst, e.skip)] = GraphEdge(src, e.dst, [], dtype, 0, e.skip)
                        kept.append(ge)
                    for t, sh in carried:
                        if t not in ge.tids:
                            ge.tids.append(t)
                            ge.count += 1
                            if sh is not None:
                                self.made.setdefault(id(ge), []).append((t, sh, fed))
                        if sh is not None:
                            ge.carry(sh, self.metas[t][1] if t in self.metas else e.dtype)
                            if index is not None and sh not in ge.index_shapes:
                                ge.index_shapes.append(sh)
                    if index is not None and index[0] not in ge.index_into:
                        ge.index_into.append(index[0])
                    for op in path:
                        if op not in ge.via:
                            ge.via.append(op)
        linked = {e.src for e in edges} | {e.dst for e in edges}
        for gid in glue:
            del self.nodes[gid]
        for ge in kept:
            if ge.via and not ge.skip:
                ge.change = self._change(ge)
        edges[:] = kept
        return len(linked & set(glue))  # ops linked to nothing are left out with every op drawn too

    @staticmethod
    def _glue_chain(gid: str, preds: dict[str, list[GraphEdge]], glue: dict[str, bool],
                    titles: dict[str, str]) -> list[str]:
        """The folded ops that made a mask or constant, first to last: ``['new_zeros', 'cat']``."""
        chain = [titles[gid]]
        ins = [e.src for e in preds.get(gid, []) if e.src in glue]
        while ins and len(chain) < 8:
            chain.insert(0, titles[ins[0]])
            ins = [e.src for e in preds.get(ins[0], []) if e.src in glue]
        return chain

    def facts(self) -> None:
        calls, ops = self.calls, self.trace.ops
        for node in self.nodes.values():
            if node.kind == "call":
                selfs = [calls[i].timing.get("self_ms") for i in node.folded if calls[i].timing]
                totals = [calls[i].timing.get("total_ms") for i in node.calls if calls[i].timing]
                if selfs and all(s is not None for s in selfs):
                    node.self_ms = float(sum(selfs))
                elif totals and all(s is not None for s in totals):
                    node.self_ms = float(sum(totals))
                if totals and all(s is not None for s in totals):
                    node.total_ms = float(sum(totals))
                # FLOPs and peaks are inclusive: the calls drawn here (not the ones folded into them) carry
                # their descendants' already, as the table's folded row shows them
                peaks = [calls[i].memory.get("peak_bytes") for i in node.calls if calls[i].memory]
                peaks = [p for p in peaks if isinstance(p, (int, float))]
                node.peak_bytes = int(max(peaks)) if peaks else None
                flops = [calls[i].flops for i in node.calls if calls[i].flops is not None]
                node.flops = sum(flops) if flops else None
                node.activation_bytes = sum(m.nbytes for i in node.calls for _, m in _tensors(calls[i].outputs))
            elif node.kind == "op":
                times = [(ops[i].timing or {}).get("self_ms", (ops[i].timing or {}).get("total_ms")) for i in node.ops]
                if times and all(isinstance(s, (int, float)) for s in times):
                    node.self_ms = node.total_ms = float(sum(times))
                node.activation_bytes = sum(m.nbytes for i in node.ops for _, m in _tensors(ops[i].outputs))

    def endpoint(self, name: str) -> str | None:
        kind, _, rest = name.partition(":")
        if kind == "input":
            return self.vis_input.get(name)
        if kind == "output":
            return self.vis_output.get(name)
        if kind == "call":
            return self.vis_call.get(int(rest)) or None
        if kind == "op":
            return self.vis_op.get(int(rest))
        return None

    def map_edges(self) -> list[GraphEdge]:
        t = self.trace
        side_of: dict[int, set[int]] = {}  # tid -> calls that read it as a side input
        for e in t.edges:
            if e.side:
                side_of.setdefault(e.tid, set()).add(int(e.dst.partition(":")[2]))
        merged: dict[tuple[str, str, bool], GraphEdge] = {}
        for e in t.edges:
            src, dst = self.endpoint(e.src), self.endpoint(e.dst)
            if src is None or dst is None or dst in self.clusters:
                continue
            if src == dst and not self._carried(e.src, e.dst, src):
                continue  # inside one call (or op) folded into the node
            if src in self.clusters and self._inside(dst, src):
                continue  # a container's own input, seen from inside
            skip = e.side or (e.tid in side_of and self._read_aside(e.dst, side_of[e.tid]))
            ge = merged.get((src, dst, skip))
            if ge is None:
                ge = merged[(src, dst, skip)] = GraphEdge(src, dst, [], e.dtype, 0, skip)
            if e.tid not in ge.tids:
                ge.tids.append(e.tid)
                ge.count += 1
                self.made.setdefault(id(ge), []).append((e.tid, tuple(e.shape), self._iteration(e.src, src)))
            ge.carry(tuple(e.shape), e.dtype)
        for ge in merged.values():
            ge.change = None if ge.skip else self._change(ge)
        return list(merged.values())

    def _fed_back(self, tid: int, node: str, made: int | None) -> bool:
        """Whether the tensor ``tid``, made by iteration ``made`` of ``node`` and passed through folded glue, is
        read by another of ``node``'s iterations (a state detached between steps): a loop, like ``_carried``."""
        if made is None or node not in self.nodes:
            return False
        return any(self.endpoint(raw) == node and self._iteration(raw, node) not in (None, made)
                   for raw in self.consumers.get(tid, []))

    def _carried(self, raw_src: str, raw_dst: str, node: str) -> bool:
        """Whether an edge between two recorded events both drawn as ``node`` joins two of its folded
        iterations (a recurrent cell's state, carried from one step to the next: drawn as a loop), not two parts
        of one call."""
        if node not in self.nodes:
            return False
        made, read = self._iteration(raw_src, node), self._iteration(raw_dst, node)
        return made is not None and read is not None and made != read

    def _iteration(self, raw: str, visible: str) -> int | None:
        """Which of the visible node's (or cluster's) folded calls or ops the raw endpoint ``call:<id>`` /
        ``op:<id>`` belongs to (0 unless a loop was folded); ``None`` for an input."""
        if not self.iterations:
            for item in [*self.nodes.values(), *self.clusters.values()]:
                for k, c in enumerate(item.calls):
                    self.iterations[("c", c)] = k
                if isinstance(item, Node) and item.kind == "op":
                    for k, o in enumerate(item.ops):
                        self.iterations[("o", o)] = k
        kind, _, rest = raw.partition(":")
        if kind == "op":
            k = self.iterations.get(("o", int(rest)))
            if k is not None:
                return k
            cid: int | None = self.trace.ops[int(rest)].call
        elif kind == "call":
            cid = int(rest)
        else:
            return None
        while cid is not None:  # up to the call this node draws (a collapsed call's inner call or op)
            k = self.iterations.get(("c", cid))
            if k is not None and self.vis_call.get(cid) == visible:
                return k
            cid = self.calls[cid].parent
        return None

    def _raw_reach(self, raw: str | None, glue: dict[str, bool]) -> dict[str, _Reach]:
        """The drawn nodes whose data reaches the recorded op ``raw`` (``op:<id>``, folded as glue) through
        recorded glue ops only: ``{source: (folded ops passed through, the source's iteration, index)}``, where
        ``index`` is ``None`` when the source's data flows on, and ``(op, tids)`` when the source only supplied the
        index an indexing op (``INDEX_OPS``) picked with: the op's title and the index tensors it read. Followed per
        recorded op, not per drawn node, so a loop of glue folded into one node (``detach ×4`` over four paths)
        joins each source to its own reader only; iterative, so a glue chain thousands of ops long is fine."""
        memo = self.reached
        if raw is None or self.endpoint(raw) not in glue:
            return {}
        stack = [raw]
        busy: set[str] = set()
        while stack:
            cur = stack[-1]
            if cur in memo:
                stack.pop()
                continue
            vis = self.endpoint(cur)
            ins = self.raw_inputs.get(cur, []) if vis is not None and glue.get(vis) else []
            todo = [s for s in ins if s.startswith("op:") and s not in memo and s not in busy
                    and self.endpoint(s) in glue]
            if todo and cur not in busy:
                busy.add(cur)
                stack.extend(todo)
                continue
            title = self.nodes[vis].title if vis is not None else ""
            indices = self._index_tids(cur, title)
            found: dict[str, _Reach] = {}
            for s in ins:
                sv = self.endpoint(s)
                if sv is None:
                    continue
                tids = self.supplied.get((cur, s), [])
                as_index = (title, tids) if indices and tids and all(t in indices for t in tids) else None
                if sv in glue:  # a mask or a constant carries no data
                    for src, (path, k, index) in memo.get(s, {}).items():
                        _reach_into(found, src, (path if title in path else [*path, title], k,
                                                 index if index is not None else as_index))
                else:
                    _reach_into(found, sv, ([title], self._iteration(s, sv), as_index))
            memo[cur] = found
            busy.discard(cur)
            stack.pop()
        return memo[raw]

    def _index_tids(self, raw: str, title: str) -> set[int]:
        """The tensors the recorded indexing op ``raw`` read as indices (every tensor argument after the first,
        which is the data it indexes); empty for any other op."""
        if op_base_name(title.partition(" ")[0]) not in INDEX_OPS or not raw.startswith("op:"):
            return set()
        args = self.trace.ops[int(raw.partition(":")[2])].inputs
        if not isinstance(args, list) or len(args) < 2:
            return set()
        data = {m.tid for _, m in iter_tensors(args[0])}
        return {m.tid for a in args[1:] for _, m in iter_tensors(a) if m.tid is not None} - data

    def _read_aside(self, consumer: str, readers: set[int]) -> bool:
        """Whether the consumer (``call:<id>`` / ``op:<id>``) runs inside a call that read the tensor aside."""
        kind, _, rest = consumer.partition(":")
        if kind == "op":
            cid = self.trace.ops[int(rest)].call
        elif kind == "call":
            cid = self.calls[int(rest)].parent
        else:
            return False
        while cid is not None:
            if cid in readers:
                return True
            cid = self.calls[cid].parent
        return False

    def _inside(self, node_id: str, cluster_id: str) -> bool:
        cl = self.nodes[node_id].cluster if node_id in self.nodes else self.clusters[node_id].parent
        while cl is not None:
            if cl == cluster_id:
                return True
            cl = self.clusters[cl].parent
        return False

    def _change(self, ge: GraphEdge) -> tuple[str, int] | None:
        """``("down", s)`` / ``("up", s)`` when every tensor the edge carries was resampled by ``s`` from the
        inputs of the call (or op) that made it (``_resampled``); ``None`` when the tensors disagree. A node folding
        a loop reads each tensor against its own iteration's inputs: a head called on a 32×32 and a 16×16 map keeps
        both."""
        changes = {_resampled(shape, self._inputs_of(ge.src, k), lambda tids, tid=tid: self._derived(tid, tids))
                   for tid, shape, k in self.made.get(id(ge), [])}
        return changes.pop() if len(changes) == 1 else None

    def _derived(self, tid: int, inputs: set[int]) -> set[int] | None:
        """Which of the tensors ``inputs`` the tensor ``tid`` was computed from, read backwards along the trace's
        edges (stopping at those inputs); ``None`` when the walk is too long to say. Worked out once per tensor
        and inputs: a tensor read by several nodes is asked about on each of their edges."""
        key = (tid, frozenset(inputs))
        if key not in self.derived:
            self.derived[key] = self._walk_back(tid, inputs)
        return self.derived[key]

    def _walk_back(self, tid: int, inputs: set[int]) -> set[int] | None:
        found: set[int] = set()
        seen = {tid}
        todo = [tid]
        while todo:
            t = todo.pop()
            if t in inputs:
                found.add(t)
                continue
            maker = self.producer.get(t)
            for u in self.reads.get(maker, []) if maker is not None else ():
                if u not in seen:
                    seen.add(u)
                    todo.append(u)
            if len(seen) > _MAX_DERIVED_WALK:
                return None
        return found

    def _inputs_of(self, visible: str, k: int | None) -> list[tuple[str, TensorMeta]]:
        if k is None:
            return []
        if visible in self.nodes:
            node = self.nodes[visible]
            return node.all_inputs[k] if k < len(node.all_inputs) else node.inputs
        c = self.calls[self.clusters[visible].calls[k]]
        return _tensors(c.inputs) + _tensors(c.kwargs)


def _resampled(shape: Sequence[int], inputs: list[tuple[str, TensorMeta]],
               derived: Callable[[set[int]], set[int] | None] | None = None) -> tuple[str, int] | None:
    """How an output of ``shape`` changed the spatial size of the inputs it was made from, read against the first
    input of its rank whose size differs from the output's: ``("down", s)`` / ``("up", s)``; ``None`` when no
    input differs or the sizes fit no stride. Inputs whose spatial dims are all 1 are left out: a broadcast gate
    (a squeeze-excitation's ``x * gate`` keeps ``x``'s 14×14, not ``↑14``). When the output keeps the size of one
    input, only inputs it was computed from count (``derived``: which of the given tensor ids it came from): a
    decoder block given its skip as an argument still reads ``↑2`` against the map it upsampled, while a head
    called once on a 32×32 and a 16×16 level returns each level's map unmarked."""
    out = spatial(shape)
    if out is None or 0 in out:
        return None
    refs = [(meta, ref) for _, meta in inputs if (ref := spatial(meta.shape)) is not None and len(ref) == len(out)
            and 0 not in ref and any(r != 1 for r in ref)]
    differ = [(meta, ref) for meta, ref in refs if ref != out]
    if differ and len(differ) < len(refs):  # it keeps one input's size: was it made from the others at all?
        tids = {meta.tid for meta, _ in differ if meta.tid is not None}
        came = derived(tids) if derived is not None and tids else None
        differ = [(meta, ref) for meta, ref in differ if came is not None and meta.tid in came]
    if not differ:
        return None
    ref = differ[0][1]
    stride = _stride(ref, out)
    if stride is not None:
        return ("down", stride)
    factor = _stride(out, ref)  # growing by f is shrinking by f read backwards: the same rounding rule
    return ("up", factor) if factor is not None else None  # (a U-Net block doubles 12×15 to its skip's 23×30)


def _stride(ref: tuple[int, ...], out: tuple[int, ...]) -> int | None:
    """The stride ``s`` (2 or more) that takes spatial size ``ref`` to ``out``: read from the height and width
    (the last two dims), which must both shrink by ``s``; a leading dim (a video's frames) may keep its size (a
    ``(1, 2, 2)`` stride) or shrink by the same ``s`` (``(2, 2, 2)``), both read ``s``. Otherwise ``None``: a
    stride of the frames alone, or of the frames by another factor than the picture, gets no mark."""
    lead = [(r, o) for r, o in zip(ref[:-2], out[:-2]) if r != o]
    stride = _even_stride(ref[-2:], out[-2:])
    if stride is None or not lead:
        return stride
    return stride if _even_stride(tuple(r for r, _ in lead), tuple(o for _, o in lead)) == stride else None


def _even_stride(ref: tuple[int, ...], out: tuple[int, ...]) -> int | None:
    """The stride ``s`` (2 or more) that takes sizes ``ref`` to ``out`` in every dimension: exactly
    (``r == o * s``), else as a strided layer rounds an odd size (``o`` is ``r / s`` rounded down or up: a stride-2
    pool takes 15 to 7, a padded stride-2 convolution to 8), the smallest such ``s`` up to ``_MAX_ROUNDED_STRIDE``;
    ``None`` when none does. A size rounded to 1 fits many strides and is marked only when exact."""
    if any(o >= r for r, o in zip(ref, out)):
        return None
    exact = {r // o for r, o in zip(ref, out) if r % o == 0}
    if len(exact) == 1 and all(r % o == 0 for r, o in zip(ref, out)):
        return exact.pop()
    if min(out) < 2:
        return None
    for s in range(2, min(max(r // o for r, o in zip(ref, out)) + 1, _MAX_ROUNDED_STRIDE) + 1):
        if all(o in (r // s, -(-r // s)) for r, o in zip(ref, out)):
            return s
    return None


def _rank(graph: Graph) -> None:
    """U-layout ranks: nodes grouped by spatial resolution, the largest at rank 0, the smallest lowest.

    Sizes that differ only by rounding share a row (``_rows``): an odd input's 97×131 and the 98×132 its decoder
    doubles back to. A node whose output is not image-like takes the resolution of the node feeding it (the
    input node takes that of its first consumer)."""
    res: dict[str, tuple[int, ...] | None] = {}
    for n in graph.nodes:
        sp = spatial(n.out_shape) if n.out_shape is not None else None
        if sp is None and n.kind == "output" and n.inputs:
            sp = spatial(n.inputs[0][1].shape)
        res[n.id] = sp or None
    preds: dict[str, list[str]] = {}
    for e in graph.edges:
        preds.setdefault(e.dst, []).append(e.src)
    for n in graph.nodes:  # event order: producers come first
        if res[n.id] is None:
            for p in preds.get(n.id, []):
                if res.get(p) is not None:
                    res[n.id] = res[p]
                    break
    succs: dict[str, list[str]] = {}
    for e in graph.edges:
        succs.setdefault(e.src, []).append(e.dst)
    for n in reversed(graph.nodes):
        if res[n.id] is None:
            for s in succs.get(n.id, []):
                if res.get(s) is not None:
                    res[n.id] = res[s]
                    break
    level = _rows({sp for sp in res.values() if sp is not None})
    for n in graph.nodes:
        sp = res[n.id]
        n.resolution = _area(sp) if sp is not None else None
        n.rank = level[sp] if sp is not None else 0
    graph.levels = max(len(set(level.values())), 1)


def _same_up_to_rounding(a: int, b: int) -> bool:
    """Whether two sides of a tensor are one size, up to how a layer rounds.

    A strided layer rounds an odd side down or up (a stride-2 pool takes 97 to 48, a padded stride-2
    convolution to 49), and a decoder that doubles it back lands within one pixel of the side it halved
    (2 × 49 = 98 against 97): so one level of a U-Net holds sides at most one pixel apart. Two *different*
    levels never do once the larger side is 4 or more, since halving ``b`` gives at most ``ceil(b / 2)``, two or
    more pixels short of ``b``. Below that a pixel is a whole level (3 halves to 2, 2 to 1), so small sides
    must be equal."""
    return a == b or (abs(a - b) == 1 and min(a, b) >= 3)


def _rows(sizes: Iterable[tuple[int, ...]]) -> dict[tuple[int, ...], int]:
    """Each spatial size's U-layout row: the largest area on row 0, the smallest lowest. Sizes of one area share
    a row, and so do sizes the same up to rounding in every dimension (``_same_up_to_rounding``).

    A row holds only sizes pairwise alike, taken largest first, so rounding never chains: 98, 97 and 96 are not
    one row though each is a pixel from the next (a run of one-pixel steps, as 2×2 valid convolutions make, is
    paired off two sizes a row rather than flattened into one)."""
    rows: list[list[tuple[int, ...]]] = []
    for sp in sorted(sizes, key=lambda s: (-_area(s), s)):
        row = next((r for r in rows if all(_alike(m, sp) for m in r)), None)
        if row is None:
            rows.append([sp])
        else:
            row.append(sp)
    return {sp: i for i, row in enumerate(rows) for sp in row}


def _alike(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return _area(a) == _area(b) or (len(a) == len(b) and all(map(_same_up_to_rounding, a, b)))


def _area(sp: tuple[int, ...]) -> int:
    a = 1
    for s in sp:
        a *= s
    return a


def build_graph(trace: Trace, *, depth: int | None = None, unroll: bool = False, fold: Iterable[str] = (),
                all_ops: bool = False, warn: bool = True) -> Graph:
    """The visible data-flow graph of ``trace`` (see the module docstring for the rules).

    ``all_ops`` draws every recorded functional op; by default ops that only index, cast or create constants
    are folded into the edges they feed.

    ``depth`` ``None`` shows every call; ``0`` draws the model as one node; ``1`` its children; and so on.
    Warns (``UserWarning``) when the graph has more than ``MAX_NODES`` nodes.
    """
    if depth is not None and depth < 0:
        raise ValueError(f"depth must be >= 0 (or None for full depth), got {depth}")
    graph = _Builder(trace, depth, unroll, fold, all_ops).build()
    if warn and len(graph.nodes) > MAX_NODES:
        deepest = max((c.depth for c in trace.calls), default=0)
        hint = max(1, min(2, deepest - 1))
        owner, ops = _main_op_owner(trace, graph)
        if ops * 2 > len(graph.nodes):  # mostly ops of one forward: folding calls or a submodule won't help
            if owner is None or owner.parent is None:
                advice = (f"{ops} of them are functional ops run in the model's own forward, which no depth folds "
                          "and which tracing a submodule leaves out: read the table, or `shapetrace lines` for "
                          "that forward line by line")
            else:
                advice = (f"{ops} of them are functional ops run in {literal(owner.module)}'s own forward: pass "
                          f"depth={owner.depth} (--depth {owner.depth}) to draw it as one node")
        elif (depth is not None and depth <= hint) or deepest <= hint:  # folding would not make it smaller
            spread = "stay side by side" if _branches(graph) else "stay in one long chain"
            advice = (f"even folded, this many calls {spread}: draw one part on its own (trace the "
                      "submodule) or read the table")
        else:
            advice = f"pass depth={hint} (--depth {hint}) to fold deeper calls into their parents"
        warn_user(f"the diagram has {len(graph.nodes)} nodes (more than {MAX_NODES}) and will be hard to "
                      f"read; {advice}")
    return graph



def _branches(graph: Graph) -> bool:
    """Whether some node of ``graph`` feeds more than one other: nodes drawn side by side, not one chain."""
    fed: dict[str, str] = {}
    for e in graph.edges:
        if fed.setdefault(e.src, e.dst) != e.dst:
            return True
    return False


def _main_op_owner(trace: Trace, graph: Graph) -> tuple[Call | None, int]:
    """The call whose own forward ran the most drawn op nodes (``None``: outside every module), and how many."""
    counts: dict[int | None, int] = {}
    for n in graph.nodes:
        if n.kind == "op" and n.ops:
            call = trace.ops[n.ops[0]].call
            counts[call] = counts.get(call, 0) + 1
    if not counts:
        return None, 0
    best = max(counts, key=lambda c: counts[c])
    return (trace.calls[best] if best is not None else None), counts[best]
