"""What a trace records for each module call: order, nesting, repeated calls, nested values, side inputs."""

from __future__ import annotations

import dataclasses
from collections import namedtuple

import pytest
import torch
from conftest import BuildsItsHead
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import shapetrace
from shapetrace.tracer.records import Opaque, Struct, TensorMeta


class ChunkedLSTM(nn.Module):
    """An LSTM run once per chunk of the sequence in a Python loop, as BPT3C does."""

    def __init__(self, chunk: int = 5):
        super().__init__()
        self.chunk = chunk
        self.lstm = nn.LSTM(8, 16, batch_first=True)

    def forward(self, x):
        state, outs = None, []
        for i in range(0, x.shape[1], self.chunk):
            out, state = self.lstm(x[:, i:i + self.chunk], state)
            outs.append(out)
        return torch.cat(outs, dim=1)


def test_lstm_called_once_per_chunk_gives_one_call_per_chunk_in_order():
    trace = shapetrace.trace(ChunkedLSTM(chunk=5), torch.randn(3, 18, 8))
    calls = trace.calls_of("lstm")
    assert [c.call_index for c in calls] == [0, 1, 2, 3]
    assert [c.inputs[0].shape for c in calls] == [(3, 5, 8), (3, 5, 8), (3, 5, 8), (3, 3, 8)]
    assert [c.outputs[0].shape for c in calls] == [(3, 5, 16), (3, 5, 16), (3, 5, 16), (3, 3, 16)]
    assert calls[0].inputs[1] is None  # no state on the first chunk
    assert [m.shape for m in calls[1].inputs[1]] == [(1, 3, 16), (1, 3, 16)]  # (h, c) carried over
    assert all(c.parent == 0 and c.depth == 1 for c in calls)
    assert [c.start for c in calls] == sorted(c.start for c in calls)


def test_calls_are_in_start_order_with_parents_and_depths():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), nn.Linear(4, 2)))
    trace = shapetrace.trace(model, torch.randn(1, 4))
    assert [(c.module, c.parent, c.depth) for c in trace.calls] == [
        ("", None, 0), ("0", 0, 1), ("1", 0, 1), ("1.0", 2, 2), ("1.1", 2, 2)]
    assert [c.id for c in trace.calls] == list(range(5))
    for c in trace.calls:
        assert c.end is not None and c.end > c.start
        if c.parent is not None:
            parent = trace.calls[c.parent]
            assert parent.start < c.start and c.end < parent.end


def test_own_total_trainable_params_and_buffers():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model[0].weight.requires_grad_(False)
    trace = shapetrace.trace(model, torch.randn(1, 3, 8, 8))
    root, conv, bn = trace.calls
    assert (conv.params, conv.own_params, conv.trainable_params) == (3 * 4 * 9 + 4, 3 * 4 * 9 + 4, 4)
    assert (root.params, root.own_params) == (conv.params + 8, 0)
    assert bn.buffers == 4 + 4 + 1  # running mean, running var, num_batches_tracked
    assert trace.model.trainable_params == 4 + 8


Pair = namedtuple("Pair", "left right")


@dataclasses.dataclass
class Output:
    logits: torch.Tensor
    hidden: tuple


class Structured(nn.Module):
    def forward(self, x, *, scale: float = 1.0, mask=None):
        return Output(logits=x * scale, hidden=(x, Pair(x[:, :1], None))), {"n": 3, "dtype": x.dtype}


def test_nested_values_keep_their_structure_and_names():
    trace = shapetrace.trace(Structured(), torch.randn(2, 3), scale=2.0)
    root = trace.calls[0]
    assert root.kwargs == {"scale": 2.0}
    out, extra = root.outputs
    assert isinstance(out, Struct) and out.kind == "Output"
    assert out.fields["logits"].shape == (2, 3)
    assert isinstance(out.fields["hidden"][1], Struct) and out.fields["hidden"][1].kind == "Pair"
    assert out.fields["hidden"][1].fields["right"] is None
    assert extra["n"] == 3 and isinstance(extra["dtype"], Opaque) and extra["dtype"].repr == "torch.float32"


def test_packed_sequence_is_a_struct_with_its_fields():
    lstm = nn.LSTM(4, 6)
    packed = pack_padded_sequence(torch.randn(5, 2, 4), [5, 3])
    trace = shapetrace.trace(lstm, packed)
    inp = trace.calls[0].inputs[0]
    assert inp.kind == "PackedSequence" and inp.fields["data"].shape == (8, 4)
    assert trace.calls[0].outputs[0].fields["data"].shape == (8, 6)


def test_tensors_are_described_by_shape_dtype_and_device():
    trace = shapetrace.trace(nn.Embedding(10, 3), torch.tensor([[1, 2]]))
    assert trace.calls[0].inputs[0] == TensorMeta((1, 2), "int64", "cpu", trace.calls[0].inputs[0].tid)
    assert trace.calls[0].outputs.dtype == "float32"


def test_modules_never_called_are_listed_as_uncalled():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(2, 2)
            self.dropout = nn.Dropout(0.1)

        def forward(self, x):
            return self.used(x)

    trace = shapetrace.trace(Unused(), torch.randn(1, 2))
    assert [(u.module, u.cls) for u in trace.uncalled] == [("dropout", "Dropout")]


def test_containers_without_a_forward_are_not_reported_as_uncalled():
    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
            self.heads = nn.ModuleDict({"a": nn.Linear(2, 1), "b": nn.Linear(2, 1)})

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return self.heads["a"](x)

    trace = shapetrace.trace(Stack(), torch.randn(1, 2))
    assert [u.module for u in trace.uncalled] == ["heads.b"]


def test_transformer_fast_path_lists_the_sublayers_it_skipped():
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True).eval()
    trace = shapetrace.trace(layer, torch.randn(2, 5, 16))
    skipped = {u.module for u in trace.uncalled}
    assert {"self_attn", "linear1", "linear2", "norm1", "norm2"} <= skipped
    assert trace.calls[0].outputs.shape == (2, 5, 16)


class StoresActivations(nn.Module):
    """fastai-style: a forward hook stores an encoder activation that a later block reads back."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 4, 3, padding=1)
        self.down = nn.MaxPool2d(2)
        self.dec = Merge()
        self.stored = None
        self.enc.register_forward_hook(lambda m, i, o: setattr(self, "stored", o))
        self.dec.source = self

    def forward(self, x):
        return self.dec(self.down(self.enc(x)))


class Merge(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2)
        self.conv = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.conv(torch.cat([self.up(x), self.source.stored], dim=1))

    def __setattr__(self, name, value):  # keep the back-reference out of the module tree
        if name == "source":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


def test_tensor_read_from_a_hook_store_is_a_side_input_of_the_block_that_reads_it():
    trace = shapetrace.trace(StoresActivations(), torch.randn(1, 3, 8, 8), ops=True)
    dec = trace.calls_of("dec")[0]
    assert [m.shape for m in dec.inputs] == [(1, 4, 4, 4)]
    assert [m.shape for m in dec.side_inputs] == [(1, 4, 8, 8)]
    enc = trace.calls_of("enc")[0]
    assert any(e.src == f"call:{enc.id}" and e.dst == f"call:{dec.id}" and e.side for e in trace.edges)


def test_side_input_consumed_by_a_child_module_is_found_without_op_capture():
    class Block(nn.Module):
        def __init__(self, owner):
            super().__init__()
            self.bn = nn.BatchNorm2d(4)
            object.__setattr__(self, "owner", owner)

        def forward(self, x):
            return x + self.bn(self.owner.stored)

    class Net(StoresActivations):
        def __init__(self):
            super().__init__()
            self.dec = Block(self)

        def forward(self, x):
            return self.dec(self.enc(x))

    trace = shapetrace.trace(Net().eval(), torch.randn(1, 3, 8, 8))
    assert [m.shape for m in trace.calls_of("dec")[0].side_inputs] == []  # stored is also its argument
    trace = shapetrace.trace(StoresActivationsViaChild().eval(), torch.randn(1, 3, 8, 8))
    assert [m.shape for m in trace.calls_of("dec")[0].side_inputs] == [(1, 4, 8, 8)]


class StoresActivationsViaChild(StoresActivations):
    def __init__(self):
        super().__init__()
        self.dec = ChildReads()
        self.dec.source = self


class ChildReads(Merge):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.conv(torch.cat([self.up(x), self.bn(self.source.stored)], dim=1))


def test_tracer_context_manager_records_what_runs_inside():
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
    with shapetrace.Tracer(model) as t:
        model(torch.randn(2, 3))
        model(torch.randn(5, 3))
    assert [c.label for c in t.trace.calls] == ["(root)", "0", "1", "(root)#1", "0#1", "1#1"]
    assert t.trace.calls[3].inputs[0].shape == (5, 3)


def test_a_tracer_blocks_inputs_and_outputs_are_the_models_own_when_the_block_reads_a_parametrized_weight_first():
    model = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(4, 4)), nn.ReLU())
    x = torch.randn(2, 4)
    with shapetrace.Tracer(model, ops=True) as t:
        penalty = model[0].weight.norm()  # runs the parametrization: a top-level call before the model's
        y = model(x)
    trace = t.trace
    assert trace.calls[0].module == "0.parametrizations.weight" and penalty.shape == ()
    assert [m.shape for m in trace.inputs] == [tuple(x.shape)] and trace.outputs.shape == tuple(y.shape)
    relu = trace.calls_of("1")[0]
    assert [e.src for e in trace.edges if e.dst.startswith("output")] == [f"call:{relu.id}"]


def test_a_tracer_block_that_calls_the_model_twice_takes_its_inputs_and_outputs_from_the_first_call():
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
    with shapetrace.Tracer(model) as t:
        model(torch.randn(2, 3))
        model(torch.randn(5, 3))
    assert t.trace.inputs[0].shape == (2, 3) and t.trace.outputs.shape == (2, 3)


def test_tensors_are_labelled_by_path_and_by_name_in_known_structures():
    from shapetrace.tracer.records import labelled_tensors

    trace = shapetrace.trace(ChunkedLSTM(chunk=4), torch.randn(2, 8, 8))
    second = trace.calls_of("lstm")[1]
    assert [n for n, _ in labelled_tensors(second.inputs, second.cls, "inputs")] == ["input", "h_0", "c_0"]
    assert [(n, m.shape) for n, m in labelled_tensors(second.outputs, second.cls)] == [
        ("output", (2, 4, 16)), ("h_n", (1, 2, 16)), ("c_n", (1, 2, 16))]
    out = shapetrace.trace(Structured(), torch.randn(2, 3)).calls[0].outputs
    assert [n for n, _ in labelled_tensors(out, "Structured")] == [
        "out[0].logits", "out[0].hidden[0]", "out[0].hidden[1].left"]


def test_a_layer_built_on_the_first_call_is_traced_with_its_calls_and_parameters():
    """Attached to the model while it runs, the new layer's calls count like any other's (the model itself
    is left without it, as it was found: tests/test_guard.py)."""
    trace = shapetrace.trace(BuildsItsHead(), torch.randn(2, 3))
    calls = {c.module: c for c in trace.calls}
    assert list(calls) == ["", "body", "head", "head.0", "head.1"]
    assert calls["head.1"].cls == "Linear" and calls["head.1"].parent == calls["head"].id
    assert calls["head.1"].inputs[0].shape == (2, 4) and calls["head.1"].outputs.shape == (2, 2)
    assert calls["head"].params == 4 * 2 + 2
    # Counted as the forward saw the model: the root and the totals include the head.
    assert calls[""].params == trace.model.params == (3 * 4 + 4) + (4 * 2 + 2)


def test_a_layer_put_into_the_model_behind_torchs_back_does_not_break_the_trace():
    """Written straight into ``_modules`` no registration hook sees it: not traced, and not counted in its
    parent, but the trace still completes."""

    class Sneaky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(3, 3)

        def forward(self, x):
            self._modules.setdefault("extra", nn.Linear(3, 3))
            return self.extra(self.body(x))

    trace = shapetrace.trace(Sneaky(), torch.randn(2, 3))
    assert [c.module for c in trace.calls] == ["", "body"]
    assert trace.calls[0].params == 12


class ThreadedBranches(nn.Module):
    """Runs its branches in a thread pool: their calls interleave with each other in time."""

    def __init__(self) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512)) for _ in range(4))

    def forward(self, x):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:
            return sum(pool.map(lambda branch: branch(x), self.branches))


def test_calls_made_in_other_threads_nest_in_their_own_thread_under_the_call_that_started_them():
    model, x = ThreadedBranches(), torch.randn(256, 512)
    for _ in range(3):  # the interleaving differs from run to run
        trace = shapetrace.trace(model, x)
        assert trace.failure is None and len(trace.calls) == 1 + 4 * 4
        for call in trace.calls[1:]:
            parent = trace.calls[call.parent].module
            assert parent == call.module.rpartition(".")[0] or (parent == "" and call.module.count(".") == 1), (
                call.module, parent)
        assert all(c.outputs.shape == (256, 512) for c in trace.calls)


def _with_own_hooks() -> nn.Sequential:
    """Layers with hooks of their own that change what the next layer's forward receives and what a call
    returns, as users write them (flatten before a head, add a dimension after it)."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Linear(8 * 6 * 6, 10), nn.Linear(10, 5))
    model[1].register_forward_pre_hook(lambda module, args: (args[0].flatten(1),))
    model[2].register_forward_hook(lambda module, args, out: out.unsqueeze(1))
    return model


def _hook_state(model: nn.Module) -> list:
    return [(list(m._forward_pre_hooks.items()), list(m._forward_hooks.items()), dict(m._forward_hooks_always_called),
             dict(m._forward_hooks_with_kwargs), dict(m._forward_pre_hooks_with_kwargs)) for m in model.modules()]


def test_shapes_are_what_the_forward_received_and_the_caller_got_when_a_layer_has_hooks_of_its_own():
    model, x = _with_own_hooks(), torch.randn(2, 3, 8, 8)
    seen = {}  # the oracle: hooks appended after the model's own see what the forward got and the call returned

    def received(module, args):
        seen["in"] = args[0].shape

    def returned(module, args, out):
        seen["out"] = out.shape

    handles = [model[1].register_forward_pre_hook(received), model[2].register_forward_hook(returned)]
    model(x)
    for h in handles:
        h.remove()
    before = _hook_state(model)
    trace = shapetrace.trace(model, x)
    assert trace.calls_of("1")[0].inputs[0].shape == tuple(seen["in"]) == (2, 288)
    assert trace.calls_of("2")[0].outputs.shape == tuple(seen["out"]) == (2, 1, 5)
    assert trace.outputs.shape == (2, 1, 5)
    # the flattened tensor the hook made still comes from the convolution, and the output from the last layer
    assert ("call:1", "call:2", (2, 288)) in [(e.src, e.dst, e.shape) for e in trace.edges]
    assert [(e.src, e.dst) for e in trace.edges if e.dst.startswith("output")] == [("call:3", "output:out")]
    assert _hook_state(model) == before


def test_a_layer_whose_own_forward_hook_raises_is_the_failing_call():
    model = _with_own_hooks()

    def check(module, args, out):
        raise ValueError("activation check failed")

    model[1].register_forward_hook(check)
    with pytest.raises(shapetrace.TraceFailed) as info:
        shapetrace.trace(model, torch.randn(2, 3, 8, 8))
    assert info.value.trace.failed_call.module == "1"
    assert info.value.trace.calls_of("1")[0].error == "ValueError: activation check failed"


def _in_two_threads(work) -> None:
    """Run ``work(i)`` in two threads at once, each with the other waiting at a barrier in between."""
    import threading

    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            for _ in range(10):
                barrier.wait()
                work(i)
        except BaseException as e:  # noqa: BLE001 - reported below, in the test's thread
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_two_traces_of_one_model_in_two_threads_each_record_their_own_calls():
    model = nn.Sequential(*[nn.Linear(64, 64) for _ in range(30)])
    counts: list[int] = []
    _in_two_threads(lambda i: counts.append(len(shapetrace.trace(model, torch.randn(8, 64)).calls)))
    assert counts == [31] * 20


def test_overlapping_traces_in_two_threads_leave_the_recursion_limit_as_found():
    import sys

    limit = sys.getrecursionlimit()
    models = [nn.Sequential(*[nn.Linear(64, 64) for _ in range(30)]) for _ in range(2)]
    _in_two_threads(lambda i: shapetrace.trace(models[i], torch.randn(8, 64)))
    assert sys.getrecursionlimit() == limit


def test_nested_tensors_are_recorded_with_their_components_shapes():
    parts = [torch.randn(2, 4), torch.randn(3, 4)]
    jagged = torch.nested.nested_tensor(parts, layout=torch.jagged)
    model = nn.Sequential(nn.Identity(), nn.Linear(4, 2))
    trace = shapetrace.trace(model, jagged)
    assert "tracer_errors" not in trace.meta
    linear = trace.calls[2]
    assert isinstance(linear.outputs, Opaque) and linear.outputs.kind == "NestedTensor"
    out = [tuple(c.shape) for c in model(jagged).unbind()]  # torch's own components: (2, 2) and (3, 2)
    assert linear.outputs.repr == f"nested(2: {', '.join(f'({a},{b})' for a, b in out)}) jagged"
    strided = shapetrace.trace(nn.Identity(), torch.nested.nested_tensor(parts))
    assert strided.calls[0].outputs == Opaque("NestedTensor", "nested(2: (2,4), (3,4))")


class Collects(nn.Module):
    """Writes into the containers it is given, as forwards that collect intermediate results do."""

    def forward(self, x, found: list, by_name: dict):
        found.append(x * 2)
        by_name["doubled"] = found[-1]
        return x


def test_the_forward_gets_the_very_containers_the_caller_passed():
    from collections import defaultdict

    found, by_name = [], defaultdict(list)
    shapetrace.trace(Collects(), torch.randn(3), found, by_name)
    assert len(found) == 1 and by_name["doubled"] is found[0]  # as a plain call leaves them


def test_a_list_that_contains_itself_is_passed_as_it_is_and_recorded_up_to_the_depth_limit():
    looped = [torch.randn(2)]
    looped.append(looped)
    trace = shapetrace.trace(nn.Identity(), looped)
    out = trace.calls[0].outputs
    assert out[0].shape == (2,) and out[1][0].tid == out[0].tid


def test_containers_holding_tensors_that_move_are_copied_keeping_their_type():
    from collections import defaultdict

    given = defaultdict(list, {"x": torch.randn(2, 3)})

    class Reads(nn.Module):
        def forward(self, inputs):
            assert type(inputs) is defaultdict and inputs.default_factory is list
            assert inputs["x"].is_meta
            return inputs["x"]

    trace = shapetrace.trace(Reads(), given, device="meta")
    assert trace.calls[0].outputs.shape == (2, 3) and not given["x"].is_meta


def test_a_checkpoint_recomputation_stopped_in_backward_is_noted_and_is_not_a_failure():
    """Non-reentrant activation checkpointing reruns the block in the backward pass and stops it with an
    exception of its own once it has what it needs: control flow, caught by torch."""
    from torch.utils.checkpoint import checkpoint

    class Checkpointed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(checkpoint(self.block, x, use_reentrant=False))

    torch.manual_seed(0)
    model, x = Checkpointed(), torch.randn(3, 4)
    model(x).sum().backward()
    expected = model.head.weight.grad.clone()  # the oracle: the same backward, untraced
    model.zero_grad()
    with shapetrace.Tracer(model, grad=True, lines=True) as tracer:
        model(x).sum().backward()
    trace = tracer.trace
    assert not any((c.code or {}).get("raised") for c in trace.calls)  # no line marked as raising either
    assert trace.failure is None and not trace.failed
    assert torch.equal(model.head.weight.grad, expected)
    stopped = [c.label for c in trace.calls if any(n.code == "recomputation-stopped" for n in c.notes)]
    assert stopped and all(c.error is None for c in trace.calls)
    assert all(label.endswith("#1") for label in stopped)  # only the rerun in backward, never the forward


def test_dict_outputs_keep_keys_whose_reprs_collide_with_string_keys():
    class TwoKeys(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 8)

        def forward(self, x):
            return {1: self.a(x), "1": self.b(x), (2, 3): x}

    trace = shapetrace.trace(TwoKeys(), torch.randn(2, 4))
    assert {k: v.shape for k, v in trace.outputs.items()} == {"1 (int)": (2, 4), "1": (2, 8), "(2, 3)": (2, 4)}


def _mismatched_linears() -> nn.Module:
    """Fails in its second layer: 3 features in, 5 expected (module level, so a worker process can run it)."""
    return nn.Sequential(nn.Linear(4, 3), nn.Linear(5, 2))


def _trace_mismatched(_: int) -> shapetrace.Trace:
    return shapetrace.trace(_mismatched_linears(), torch.randn(2, 4))


def test_a_trace_failure_pickles_with_its_message_and_partial_trace():
    import pickle

    with pytest.raises(shapetrace.TraceFailed) as info:
        _trace_mismatched(0)
    back = pickle.loads(pickle.dumps(info.value))
    assert type(back) is shapetrace.TraceFailed
    assert str(back) == str(info.value)
    assert back.trace == info.value.trace


def test_a_format_error_pickles_with_its_path_and_problem():
    import pickle

    error = shapetrace.TraceFormatError("calls[0].id", "is 7, expected 0")
    back = pickle.loads(pickle.dumps(error))
    assert (type(back), back.path, back.problem, str(back)) == (type(error), error.path, error.problem, str(error))


@pytest.mark.slow
def test_a_trace_failing_in_a_worker_process_arrives_as_a_trace_failure():
    import concurrent.futures
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    with (concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool,
          pytest.raises(shapetrace.TraceFailed, match=r"failed in 1 \(Linear\)")):
        pool.submit(_trace_mismatched, 0).result()


class _Config:
    """A plain object with Python's default repr (``<... object at 0x...>``)."""


class _TakesConfig(nn.Module):
    def forward(self, x, cfg, table):
        return x


def test_a_default_repr_is_recorded_without_its_memory_address():
    """Two runs of the same forward give the same trace: nothing in it depends on where objects live."""
    def run() -> shapetrace.Trace:
        cfg = _Config()
        return shapetrace.trace(_TakesConfig(), torch.randn(1, 2), cfg=cfg, table={cfg: 1, "f": run})

    first, second = run(), run()
    assert first.kwargs["cfg"] == Opaque("_Config", f"<{__name__}._Config object>")
    assert "0x" not in first.to_json()
    assert first.to_json() == second.to_json()


class _Steps(nn.Module):
    """Three layers; ``at_start(self)`` (if set) runs when the forward begins, ``midway()`` after the first."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)
        self.at_start = None
        self.midway = None

    def forward(self, x):
        if self.at_start is not None:
            self.at_start(self)
        x = self.a(x)
        if self.midway is not None:
            self.midway()
        return self.c(self.b(x))


def test_another_threads_own_forward_of_the_model_started_during_the_trace_is_not_recorded():
    import threading

    model, x = _Steps(), torch.randn(2, 4)
    outputs = []
    other = threading.Thread(target=lambda: outputs.append(model(x)))

    def run_the_other_thread(m):  # during the traced forward: the other thread runs a whole forward of its own
        m.at_start = None
        other.start()
        other.join()

    model.at_start = run_the_other_thread
    trace = shapetrace.trace(model, x)
    assert [c.label for c in trace.calls] == ["(root)", "a", "b", "c"]
    assert len(outputs) == 1


def test_another_threads_forward_of_the_model_begun_before_the_trace_is_not_recorded():
    import threading

    model, x = _Steps(), torch.randn(2, 4)
    midway, tracing = threading.Event(), threading.Event()
    outputs = []
    model.midway = lambda: (midway.set(), tracing.wait())  # its first layer runs before the trace

    other = threading.Thread(target=lambda: outputs.append(model(x)))
    other.start()
    midway.wait()

    def let_the_other_thread_finish(m):  # the traced forward begins: the other thread's layers b and c run now
        m.at_start, m.midway = None, None
        tracing.set()
        other.join()

    model.at_start = let_the_other_thread_finish
    trace = shapetrace.trace(model, x)
    assert [c.label for c in trace.calls] == ["(root)", "a", "b", "c"]
    assert len(outputs) == 1


def _labels_seen_by_plain_hooks(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The oracle: the modules a plain forward calls, in call order, from torch's own global pre-hook."""
    from torch.nn.modules import module as torch_module

    names = {id(m): n or "(root)" for n, m in model.named_modules()}
    seen: list[str] = []
    handle = torch_module.register_module_forward_pre_hook(
        lambda m, args: seen.append(names[id(m)]) if id(m) in names else None)
    try:
        model(x)
    finally:
        handle.remove()
    return seen


def test_another_threads_forward_before_the_traced_one_leaves_the_traced_forward_recorded_in_full():
    import threading

    model, x = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)), torch.randn(8, 16)
    expected = _labels_seen_by_plain_hooks(model, x)
    with shapetrace.Tracer(model) as t:
        other = threading.Thread(target=model, args=(x,))  # a serving thread's request, say
        other.start()
        other.join()
        model(x)
    assert [c.label for c in t.trace.calls] == expected
    assert not t.trace.uncalled


def test_a_thread_calling_a_layer_during_the_traced_forward_after_another_threads_forward_gets_no_error():
    import threading

    model, x = _Steps(), torch.randn(2, 4)
    errors: list[BaseException] = []

    def call_a_layer() -> None:
        try:
            model.a(x)
        except BaseException as e:  # noqa: BLE001 - reported below, in the test's thread
            errors.append(e)

    def run_in_a_thread(target) -> None:
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()

    with shapetrace.Tracer(model) as t:
        run_in_a_thread(lambda: model(x))  # another thread's own forward, before the traced one
        model.at_start = lambda m: (setattr(m, "at_start", None), run_in_a_thread(call_a_layer))
        model(x)
    assert not errors
    # The layer called from a thread during the forward looks like a pool's branch: recorded under the root.
    assert [c.label for c in t.trace.calls] == ["(root)", "a", "a#1", "b", "c"]


def test_a_model_called_only_from_another_thread_inside_a_tracer_warns_that_the_trace_is_empty():
    import asyncio
    import threading

    model, x = nn.Sequential(nn.Linear(4, 4), nn.ReLU()), torch.randn(2, 4)

    async def serve() -> shapetrace.Tracer:
        with shapetrace.Tracer(model) as t:
            await asyncio.to_thread(model, x)
        return t

    # asyncio.run in a thread of its own: this one may hold another test's running loop (playwright's)
    done: dict[str, shapetrace.Tracer] = {}

    def serve_in_a_thread_of_its_own() -> None:
        server = threading.Thread(target=lambda: done.setdefault("tracer", asyncio.run(serve())))
        server.start()
        server.join(60)

    with pytest.warns(shapetrace.ShapetraceWarning, match="called only from another thread.*Call the model in the "
                                                          "thread that entered the Tracer"):
        serve_in_a_thread_of_its_own()
    assert done["tracer"].trace.calls == []


def test_a_tracer_around_no_forward_gives_no_thread_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with shapetrace.Tracer(nn.Linear(4, 4)) as t:
            pass
    assert t.trace.calls == []
