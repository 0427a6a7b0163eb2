"""Data-flow edges by tensor identity: in-place changes, views, created tensors, reused ids, repeated calls."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shapetrace
from shapetrace.tracer.records import iter_tensors


def unowned_edges(trace) -> list:
    """Edges whose source does not list the edge's tensor: an op or call among its outputs, an ``input:``
    node among the trace's inputs of that name. The format says an edge runs from the tensor's producer."""
    def tids(value) -> set[int]:
        return {m.tid for _, m in iter_tensors(value)}

    def owned(node: str) -> set[int]:
        kind, _, rest = node.partition(":")
        if kind == "op":
            return tids(trace.ops[int(rest)].outputs)
        if kind == "call":
            return tids(trace.calls[int(rest)].outputs)
        return tids(trace.inputs[int(rest)] if rest.isdigit() else trace.kwargs.get(rest))

    return [e for e in trace.edges if e.tid not in owned(e.src)]


def edges_between(trace, kinds=("call", "op", "input", "output")) -> set[tuple[str, str]]:
    """Edges as (label, label): a call by its module label, an op by its name, inputs/outputs as named."""

    def label(node: str) -> str:
        kind, _, rest = node.partition(":")
        if kind == "call":
            return trace.calls[int(rest)].label
        if kind == "op":
            return trace.ops[int(rest)].name
        return node

    return {(label(e.src), label(e.dst)) for e in trace.edges}


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.act = nn.ReLU(inplace=True)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        h += self.b(x)  # in place: the value after is the add's, not a's
        return self.out(self.act(h))  # in-place ReLU: the value after is the ReLU's


def test_in_place_changes_route_the_flow_through_the_op_and_the_module_that_changed_it():
    trace = shapetrace.trace(Residual(), torch.randn(3, 4), ops=True)
    edges = edges_between(trace)
    assert {("a", "add_"), ("b", "add_"), ("add_", "act"), ("act", "out")} <= edges
    assert ("a", "act") not in edges and ("a", "out") not in edges and ("add_", "out") not in edges


class Reshapes(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(self.conv(x).view(x.shape[0], -1))


class WritesThroughAView(nn.Module):
    def __init__(self, write: str) -> None:
        super().__init__()
        self.lin, self.relu, self.write = nn.Linear(4, 4), nn.ReLU(), write

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x).clone()
        if self.write == "slice":
            y[:, :2].mul_(2)
        else:
            y.view(8).add_(1)
        return self.relu(y)


@pytest.mark.parametrize(("write", "op"), [("slice", "mul_"), ("view", "add_")])
def test_an_in_place_op_on_a_view_routes_the_flow_of_its_base_through_the_op(write, op):
    trace = shapetrace.trace(WritesThroughAView(write), torch.randn(2, 4), ops=True)
    into_relu = {src for src, dst in edges_between(trace) if dst == "relu"}
    assert into_relu == {op}  # not straight from clone, past the write


@pytest.mark.parametrize("write", ["slice", "view"])
def test_the_base_a_view_write_changed_is_listed_among_the_writing_ops_outputs(write):
    trace = shapetrace.trace(WritesThroughAView(write), torch.randn(2, 4), ops=True)
    into_relu = [e for e in trace.edges if e.dst.startswith("call:") and trace.calls[int(e.dst[5:])].module == "relu"]
    assert [e.shape for e in into_relu] == [(2, 4)]  # the base, whole, as the ReLU received it
    assert unowned_edges(trace) == []


def test_edges_of_torchvisions_swin_v2_attention_run_from_the_ops_that_made_their_tensors():
    from torchvision.models.swin_transformer import ShiftedWindowAttentionV2

    torch.manual_seed(0)
    layer = ShiftedWindowAttentionV2(dim=32, window_size=[4, 4], shift_size=[0, 0], num_heads=2).eval()
    trace = shapetrace.trace(layer, torch.randn(1, 8, 8, 32), ops=True)  # qkv_bias[l:2l].zero_() in its forward
    assert unowned_edges(trace) == []
    zero = next(op for op in trace.ops if op.name == "zero_")
    linear = next(op for op in trace.ops if op.name == "linear")
    bias = next(e for e in trace.edges if e.src == f"op:{zero.id}" and e.dst == f"op:{linear.id}")
    assert bias.shape == (3 * 32,)  # the whole qkv bias, its key third zeroed, reaches the projection


def test_a_view_between_modules_is_an_op_node_with_its_shape():
    trace = shapetrace.trace(Reshapes(), torch.randn(2, 3, 8, 8), ops=True)
    assert {("conv", "view"), ("view", "fc")} <= edges_between(trace)
    view = next(o for o in trace.ops if o.name == "view")
    assert view.outputs.shape == (2, 256) and view.call == 0
    into_fc = next(e for e in trace.edges if e.dst == f"call:{trace.calls_of('fc')[0].id}")
    assert into_fc.shape == (2, 256)


class MakesItsOwn(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        bias = torch.ones(x.shape[0], 3)  # created inside the forward, from no input
        return self.lin(x + bias)


def test_tensors_created_inside_a_forward_come_from_their_creating_op():
    trace = shapetrace.trace(MakesItsOwn(), torch.randn(2, 3), ops=True)
    assert {("input:0", "add"), ("ones", "add"), ("add", "lin"), ("lin", "output:out")} <= edges_between(trace)


class FreesAndAllocates(nn.Module):
    """Drops a module's output, then feeds a fresh tensor (often at the freed object's address) onward."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(3, 3)
        self.second = nn.Linear(3, 3)
        self.reused = 0

    def forward(self, x):
        gone = id(self.first(x))  # the output is freed at once
        for _ in range(50):
            fresh = x.new_ones(x.shape)
            if id(fresh) == gone:
                self.reused += 1
                break
        return self.second(fresh)


def test_a_freed_tensor_whose_id_python_reuses_is_not_mistaken_for_the_new_one():
    model = FreesAndAllocates()
    for _ in range(20):  # CPython hands the freed object's address to a new tensor in some of the runs
        trace = shapetrace.trace(model, torch.randn(2, 3))  # no op capture: only the id map could link them
        assert ("first", "second") not in edges_between(trace)
        if model.reused >= 3:
            break
    if not model.reused:
        pytest.skip("this Python never reused the freed tensor's id, so nothing was exercised")


def test_each_call_of_a_module_run_in_a_loop_gets_its_own_edges():
    class Loop(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = nn.Linear(4, 4)

        def forward(self, x):
            for _ in range(3):
                x = self.cell(x)
            return x

    trace = shapetrace.trace(Loop(), torch.randn(1, 4), ops=True)
    assert {("input:0", "cell"), ("cell", "cell#1"), ("cell#1", "cell#2"), ("cell#2", "output:out")} <= \
        edges_between(trace)


def test_op_capture_keeps_the_transformer_fast_path_that_eval_really_takes():
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True).eval()
    model = nn.Sequential(nn.Linear(16, 16), layer)
    plain = {u.module for u in shapetrace.trace(model, torch.randn(2, 5, 16)).uncalled}
    with_ops = shapetrace.trace(model, torch.randn(2, 5, 16), ops=True)
    assert {u.module for u in with_ops.uncalled} == plain
    assert {"1.self_attn", "1.linear1", "1.norm1"} <= plain
    assert ("0", "1") in edges_between(with_ops)
    assert torch.overrides._get_current_function_mode() is None  # the mode's stack is left clean


def test_op_capture_records_the_residual_adds_of_a_transformer_layer_on_its_slow_path():
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True)
    trace = shapetrace.trace(layer, torch.randn(2, 5, 16), ops=True, train=True)  # training: no fast path
    assert [u.module for u in trace.uncalled] == ["self_attn.out_proj"]  # its weights are used, not its forward
    assert [o.name for o in trace.ops] == ["add", "relu", "add"]  # x + sa(x), the feed-forward's F.relu, x + ff(x)
    assert {("input:0", "add"), ("dropout1", "add"), ("add", "norm1"), ("norm1", "add"), ("dropout2", "add"),
            ("add", "norm2"), ("norm2", "output:out"), ("linear1", "relu"), ("relu", "dropout")} <= \
        edges_between(trace)


class AddThenRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return torch.relu(self.lin(x) + 1)


class CustomLeaf(nn.Module):
    def forward(self, x):
        return torch.tanh(x * 2)


def test_op_count_is_the_torch_functions_run_inside_each_call():
    trace = shapetrace.trace(AddThenRelu(), torch.randn(2, 3), ops=True)
    root, lin = trace.calls
    assert lin.op_count is None  # a torch.nn layer: its internals are not looked into
    assert root.op_count == 2  # add and relu in the root's own code
    assert [op.name for op in trace.ops] == ["add", "relu"]
    assert shapetrace.trace(AddThenRelu(), torch.randn(2, 3)).calls[0].op_count is None  # only with ops
    outer, leaf = shapetrace.trace(nn.Sequential(CustomLeaf()), torch.randn(2), ops=True).calls
    assert leaf.op_count == 2 and outer.op_count == 2  # mul and tanh, in a leaf of the user's own


def test_a_tracer_inside_a_tracer_counts_the_same_ops_as_either_alone():
    """The outer recorder sits below the inner one on torch's mode stack, so it cannot leave the stack for a
    torch.nn layer: it must still not count that layer's internals."""
    model, x = AddThenRelu(), torch.randn(2, 3)
    with shapetrace.Tracer(model, ops=True) as alone:
        model(x)
    with shapetrace.Tracer(model, ops=True) as outer, shapetrace.Tracer(model, ops=True) as inner:
        model(x)
    counts = [c.op_count for c in alone.trace.calls]
    assert counts == [2, None]
    assert [c.op_count for c in inner.trace.calls] == counts
    assert [c.op_count for c in outer.trace.calls] == counts
    assert [op.name for op in outer.trace.ops] == [op.name for op in alone.trace.ops]


def test_a_detectors_backbone_gets_its_input_from_the_transform_through_torchvisions_image_list():
    from torchvision.models import detection

    torch.manual_seed(0)
    model = detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3).eval()
    images = [torch.rand(3, 64, 80)]
    seen = {}  # the oracle: torch's own hooks see the batched tensor leave the transform and enter the backbone
    handles = [model.transform.register_forward_hook(lambda m, a, out: seen.update(batched=out[0].tensors)),
               model.backbone.register_forward_pre_hook(lambda m, a: seen.update(received=a[0]))]
    model(images)
    for h in handles:
        h.remove()
    assert seen["received"] is seen["batched"]
    trace = shapetrace.trace(model, images, ops=True)
    transform, backbone = trace.calls_of("transform")[0], trace.calls_of("backbone")[0]
    batched = transform.outputs[0].fields["tensors"]
    assert backbone.inputs[0].tid == batched.tid
    assert (f"call:{transform.id}", f"call:{backbone.id}", batched.tid) in [(e.src, e.dst, e.tid) for e in trace.edges]
    after: dict[str, list[str]] = {}
    for e in trace.edges:
        after.setdefault(e.src, []).append(e.dst)
    reached, todo = set(), ["input:0"]
    while todo:
        node = todo.pop()
        if node not in reached:
            reached.add(node)
            todo += after.get(node, [])
    assert {e.dst for e in trace.edges if e.dst.startswith("output:")} <= reached  # one graph, input to outputs
    assert unowned_edges(trace) == []


class ChangesItsBlocksOutput(nn.Module):
    """A residual written in place in the parent's own code: ``r = block(x); r += x; return r``."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(8, 8), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.block(x)
        r += x
        return r


class ResidualThenHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.res = ChangesItsBlocksOutput()
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.res(x))


def test_an_output_changed_in_place_by_the_caller_is_a_new_value_of_the_caller_without_op_recording():
    from shapetrace.renderers.rows import totals

    model, x = ResidualThenHead(), torch.randn(2, 8)
    plain, with_ops = shapetrace.trace(model, x), shapetrace.trace(model, x, ops=True)
    res, block = plain.calls_of("res")[0], plain.calls_of("res.block")[0]
    assert res.outputs.tid != block.outputs.tid  # r after ``r += x`` is not the block's value
    assert ("res", "head") in edges_between(plain)  # the value head reads was made in res's own code
    assert ("add_", "head") in edges_between(with_ops)  # ... by the add_ that ops=True records there
    assert ("res.block.1", "head") not in edges_between(plain)
    assert totals(plain).activation_tensors == totals(with_ops).activation_tensors == 4
    assert totals(plain).activation_bytes == totals(with_ops).activation_bytes


def test_plain_and_op_traces_of_mobilenet_v3_small_count_the_same_activations():
    import torchvision

    from shapetrace.renderers.rows import totals

    torch.manual_seed(0)
    model, x = torchvision.models.mobilenet_v3_small(weights=None).eval(), torch.randn(1, 3, 64, 64)
    plain, with_ops = totals(shapetrace.trace(model, x)), totals(shapetrace.trace(model, x, ops=True))
    assert (plain.activation_bytes, plain.activation_tensors) == (with_ops.activation_bytes, with_ops.activation_tensors)


def test_outputs_of_an_inference_mode_forward_keep_their_ids_without_a_version_counter():
    model, x = ResidualThenHead(), torch.randn(2, 8)
    with torch.inference_mode():
        trace = shapetrace.trace(model, x)
    assert trace.calls_of("res.block")[0].outputs.tid == trace.calls_of("res.block.1")[0].outputs.tid
    assert ("res.block.0", "res.block.1") in edges_between(trace)


class ReturnsAChangedTuple(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.lin(x)
        r += x
        return r, x


def test_a_tuple_output_changed_in_place_by_the_caller_is_a_new_value_of_the_caller():
    model, x = ReturnsAChangedTuple(), torch.randn(2, 8)
    root, lin = shapetrace.trace(model, x).calls
    assert root.outputs[0].tid != lin.outputs.tid
