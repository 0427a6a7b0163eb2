"""profile(): per-call times that add up, chunk calls timed apart, fast paths, options and the pure GPU maths."""

from __future__ import annotations

import time
import types

import pytest
import torch
import torchvision
from conftest import BuildsItsHead, requires_dot
from torch import nn

import shapetrace
from shapetrace.tracer.flops import rnn_step_flops
from shapetrace.tracer.metrics import Note
from shapetrace.tracer.probes.timing import TimerProbe
from shapetrace.tracer.timing import (
    KIND_CPU,
    PeakStack,
    ProfileUsageError,
    attribute_kernels,
    kineto_intervals,
    nested_self_times,
    quantile,
)


def _profile(model, *args, **kw):
    kw.setdefault("warmup", 1)
    kw.setdefault("repeat", 3)
    return shapetrace.profile(model, *args, device="cpu", **kw)


def _check_adds_up(trace, rel: float = 1e-6) -> None:
    """Self times of all calls sum to the root's inclusive time (exactly, up to rounding to 1e-6 ms)."""
    timed = [c for c in trace.calls if c.timing]
    assert timed
    for c in timed:
        t = c.timing
        assert t["self_ms"] >= 0, c.label
        assert t["total_ms"] >= 0 and t["p10_ms"] <= t["median_ms"] <= t["p90_ms"]
        assert t["kind"] == KIND_CPU
    root = trace.calls[0]
    total = sum(c.timing["self_ms"] for c in timed)
    assert total == pytest.approx(root.timing["total_ms"], rel=rel, abs=1e-4)
    assert trace.timing["attributed_ms"] == pytest.approx(total, abs=1e-4)


@pytest.fixture(scope="module")
def resnet_trace():
    model = torchvision.models.resnet18(num_classes=10).eval()
    return _profile(model, torch.randn(1, 3, 64, 64), repeat=5)


def test_self_times_add_up_exactly_in_one_repeat():
    model = torchvision.models.resnet18(num_classes=10).eval()
    trace = _profile(model, torch.randn(1, 3, 32, 32), warmup=1, repeat=1)
    _check_adds_up(trace)


def test_self_times_add_up_over_repeats(resnet_trace):
    # interquartile means over the same repeats for every call: exact however noisy the machine is
    _check_adds_up(resnet_trace)


def test_trace_timing_fields(resnet_trace):
    t = resnet_trace.timing
    for key in ("forward_ms", "profiled_ms", "overhead", "kind", "device", "dtype", "attributed_ms", "repeats",
                "warmup"):
        assert key in t
    assert t["repeats"] == 5 and t["warmup"] == 1 and t["device"] == "cpu" and t["dtype"] == "float32"
    assert t["overhead"] == pytest.approx(t["profiled_ms"] / t["forward_ms"], rel=1e-4)
    assert "gpu_idle_fraction" not in t
    assert resnet_trace.calls[0].timing["cpu_ms"] == resnet_trace.calls[0].timing["total_ms"]
    # a parent's inclusive time covers its children's
    for c in resnet_trace.calls:
        kids = resnet_trace.children(c)
        assert c.timing["total_ms"] >= 0.5 * sum(k.timing["total_ms"] for k in kids)


def test_memory_from_shapes(resnet_trace):
    conv1 = resnet_trace.calls_of("conv1")[0]
    assert conv1.memory == {"activation_bytes": 64 * 32 * 32 * 4, "param_bytes": 64 * 3 * 7 * 7 * 4}
    assert resnet_trace.calls[0].memory["param_bytes"] == resnet_trace.model.param_bytes
    assert "peak_bytes" not in conv1.memory  # CUDA only


def test_json_round_trip(resnet_trace):
    again = shapetrace.load(resnet_trace.to_json())
    assert again.timing == resnet_trace.timing
    assert again.calls[3].timing == resnet_trace.calls[3].timing


class _Chunked(nn.Module):
    """A stand-in for BPT3C: one LSTM run once per chunk in a Python loop."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(8, 16, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs, state = [], None
        for chunk in x.split(5, dim=1):
            out, state = self.rnn(chunk, state)
            outs.append(out)
        return torch.cat(outs, 1)


def test_chunk_calls_are_timed_separately():
    trace = _profile(_Chunked(), torch.randn(2, 15, 8))
    calls = trace.calls_of("rnn")
    assert [c.call_index for c in calls] == [0, 1, 2]
    assert all(c.timing and c.timing["total_ms"] > 0 for c in calls)
    assert len({c.id for c in calls}) == 3
    _check_adds_up(trace)


def test_modules_view_adds_up_the_chunk_calls_of_one_module():
    from shapetrace.cli_profile import summary
    from shapetrace.renderers.table import render_text

    trace = _profile(_Chunked(), torch.randn(2, 15, 8))
    calls = trace.calls_of("rnn")
    per_call = [c.timing["self_ms"] for c in calls]
    line = next(x for x in summary(trace, view="modules").splitlines() if "(LSTM" in x)
    assert "rnn (LSTM, 3 calls)" in line
    assert float(line.split()[0]) == pytest.approx(sum(per_call), abs=1e-3)
    row = next(x for x in render_text(trace, view="modules", width=None).splitlines() if "LSTM" in x)
    assert "×3" in row and f"{sum(c.timing['total_ms'] for c in calls):.3f}" in row
    # the calls view (and the default summary) keep one row per chunk call
    assert sum("(LSTM)" in x for x in summary(trace).splitlines()) == 3


def test_awd_lstm_classifier_bpt3c_on_a_padded_batch():
    text = pytest.importorskip("shapetrace.gallery.text")
    cfg = {"emb_sz": 16, "n_hid": 24, "n_layers": 3, "pad_token": 1, "bidir": False, "output_p": 0.4, "hidden_p": 0.3,
               "input_p": 0.4, "embed_p": 0.05, "weight_p": 0.5}
    model = text.get_text_classifier(text.AWD_LSTM, 100, 2, seq_len=72, config=cfg).eval()
    g = torch.Generator().manual_seed(0)
    batch = text.pad_batch([torch.randint(2, 100, (n,), generator=g) for n in (200, 150, 100, 60)], seq_len=72)
    trace = _profile(model, batch, warmup=0, repeat=2)
    lstms = [c for c in trace.calls if c.cls == "LSTM"]
    assert len(lstms) == 9  # 3 LSTMs x 3 chunks
    by_module: dict[str, list] = {}
    for c in lstms:
        by_module.setdefault(c.module, []).append(c)
    rows = [2 * 72, 4 * 72, 3 * 56]  # the rows run per chunk (see the exhibit's caption)
    for calls in by_module.values():
        assert [c.call_index for c in calls] == [0, 1, 2]
        assert all(c.timing is not None for c in calls)
        first = calls[0]
        i, h = first.inputs[0].shape[-1], first.outputs[0].shape[-1]
        assert [c.flops for c in calls] == [r * rnn_step_flops("LSTM", i, h) for r in rows]
    _check_adds_up(trace)


def test_transformer_fast_path_is_the_layers_self_time():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
            self.head = nn.Linear(32, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.layer(x))

    net = Net().eval()
    trace = _profile(net, torch.randn(2, 10, 32))
    uncalled = {u.module for u in trace.uncalled}
    assert {"layer.self_attn", "layer.linear1", "layer.linear2", "layer.norm1"} <= uncalled  # fused fast path
    layer = trace.calls_of("layer")[0]
    assert trace.children(layer) == []
    assert layer.timing["self_ms"] == layer.timing["total_ms"] > 0
    assert layer.flops and layer.flops > 0
    _check_adds_up(trace)


def test_model_left_unchanged_and_dtype_cast():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()
    before = [t.clone() for t in model.state_dict().values()]
    trace = _profile(model, torch.randn(2, 3, 8, 8), dtype="bf16", repeat=2)
    assert trace.timing["dtype"] == "bfloat16"
    assert trace.calls[0].outputs.dtype == "bfloat16"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.training
    for a, b in zip(before, model.state_dict().values()):
        assert torch.equal(a, b)


class KeepsItsState(nn.Module):
    """Like fastai's AWD_LSTM, which keeps ``self.hidden`` between calls: each forward reads and advances it."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.hidden = None
        self.forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        self.hidden = self.lin(x).detach() if self.hidden is None else self.hidden + 1
        return self.hidden


@pytest.mark.parametrize("options", [{}, {"dtype": "fp32"}, {"dtype": "bf16"}], ids=["own-device", "fp32", "bf16"])
def test_a_profile_leaves_a_stateful_model_as_no_forward_had_run_on_every_device_and_dtype(options):
    model = KeepsItsState()
    _profile(model, torch.randn(4, 8), **options)
    assert model.forwards == 0 and model.hidden is None


def test_a_trace_is_one_forward_of_a_stateful_model_as_calling_it_would_be():
    model = KeepsItsState()
    shapetrace.trace(model, torch.randn(4, 8))
    assert model.forwards == 1 and model.hidden is not None


class WritesItsStateInPlace(nn.Module):
    """Counts its calls in a plain tensor (``+=``, in place) and logs batch sizes into a list inside a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.steps = torch.zeros(())
        self.log: dict[str, list[int]] = {"seen": []}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        self.log["seen"].append(x.shape[0])
        return self.lin(x)


@pytest.mark.parametrize("options", [{}, {"dtype": "bf16"}], ids=["own-device", "bf16"])
def test_a_profile_puts_back_a_plain_tensor_the_forward_counts_in_place(options):
    model = WritesItsStateInPlace()
    steps = model.steps
    _profile(model, torch.randn(2, 4), repeat=3, warmup=1, **options)
    assert model.steps is steps and model.steps.item() == 0


def test_a_profile_puts_back_a_list_the_forward_appends_to_inside_a_dict():
    model = WritesItsStateInPlace()
    seen = model.log["seen"]
    _profile(model, torch.randn(2, 4), repeat=3, warmup=1)
    assert model.log["seen"] is seen and seen == []


def test_a_trace_leaves_a_plain_tensor_counted_in_place_as_one_forward_would():
    model = WritesItsStateInPlace()
    shapetrace.trace(model, torch.randn(2, 4))
    assert model.steps.item() == 1 and model.log["seen"] == [2]


def test_parameter_bytes_per_call_are_counted_in_the_dtype_profiled():
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU())
    trace = _profile(model, torch.randn(2, 256), dtype="bf16", repeat=1, warmup=0)
    params = 256 * 256 + 256
    assert trace.model.param_bytes == 2 * params
    assert trace.calls[0].memory.param_bytes == trace.calls[1].memory.param_bytes == 2 * params


def test_a_model_with_lazy_layers_is_profiled_on_a_copy_and_stays_lazy():
    model = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(3))
    for dtype in (None, "bf16"):
        trace = _profile(model, torch.randn(2, 5), dtype=dtype, repeat=1, warmup=0)
        assert trace.outputs.shape == (2, 3) and trace.meta["lazy_traced_on_copy"] == ["0", "2"]
        assert all(c.timing is not None for c in trace.calls) and trace.model.params == 5 * 8 + 8 + 8 * 3 + 3
        assert type(model[0]) is nn.LazyLinear and model[0].has_uninitialized_params()


def test_progress_and_usage_errors():
    seen = []
    _profile(nn.Linear(3, 4), torch.randn(2, 3), warmup=2, repeat=3, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 5) for i in range(1, 6)]
    if not torch.cuda.is_available():
        with pytest.raises(ProfileUsageError, match="cuda"):
            shapetrace.profile(nn.Linear(3, 4), torch.randn(2, 3), device="cuda")
    with pytest.raises(ProfileUsageError):
        shapetrace.profile(nn.Linear(3, 4), torch.randn(2, 3), device="cpu", dtype="fp7")


@pytest.mark.parametrize(("name", "value", "least"), [("repeat", 2.5, 1), ("repeat", 0, 1), ("repeat", True, 1),
                                                    ("warmup", -1, 0), ("warmup", "3", 0)])
def test_repeat_and_warmup_must_be_whole_numbers_and_the_error_names_which(name, value, least):
    with pytest.raises(ProfileUsageError, match=f"^{name} must be a whole number >= {least}, got {value!r}$"):
        _profile(nn.Linear(3, 4), torch.randn(2, 3), **{name: value})


def test_the_api_advises_the_api_s_device_argument_and_the_cli_its_option(monkeypatch):
    from click.testing import CliRunner

    from shapetrace.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a GPU, wherever this runs
    with pytest.raises(ProfileUsageError, match='use device="cpu"$'):
        shapetrace.profile(nn.Linear(3, 4), torch.randn(2, 3), device="cuda")
    res = CliRunner().invoke(main, ["profile", "resnet18", "--device", "cuda"])
    assert res.exit_code == 2 and "use --device cpu" in res.output and 'device="cpu"' not in res.output


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an MPS device")
def test_a_device_this_torch_cannot_use_is_a_usage_error_not_torch_s_runtime_error():
    with pytest.raises(ProfileUsageError, match="device 'mps' cannot be used on this machine.*use device=\"cpu\""):
        shapetrace.profile(nn.Linear(3, 4), torch.randn(2, 3), device="mps")


def test_failed_forward_raises_trace_failed():
    with pytest.raises(shapetrace.TraceFailed) as info:
        _profile(nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2)), torch.randn(2, 3))
    assert info.value.trace.failed_call.module == "1"


def test_compiled_module_is_one_region():
    inner = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    model = nn.Sequential(torch.compile(inner, backend="eager"), nn.Softmax(-1))
    trace = _profile(model, torch.randn(3, 4), warmup=1, repeat=2)
    assert trace.meta["compiled_regions"] == ["0"]
    region = trace.calls_of("0")[0]
    assert region.timing is not None and any(n.code == "compiled-region" for n in region.notes)
    _check_adds_up(trace)


# ---- the pure parts of the GPU path, on synthetic intervals --------------------------------------------

def _compile_hook_warnings(run) -> list[str]:
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        run()
    return [str(w.message) for w in seen if "when there are global hooks" in str(w.message)]


def _with_a_compiled_part() -> nn.Module:
    return nn.Sequential(torch.compile(nn.Sequential(nn.Linear(16, 16), nn.ReLU()), backend="eager"), nn.Linear(16, 2))


def test_torch_s_warning_about_global_hooks_is_not_shown_for_shapetrace_s_own():
    model, x = _with_a_compiled_part(), torch.randn(4, 16)
    assert _compile_hook_warnings(lambda: shapetrace.trace(model, x)) == []
    assert _compile_hook_warnings(lambda: _profile(model, x, warmup=0, repeat=1)) == []


def test_torch_s_warning_about_global_hooks_is_shown_when_the_caller_has_one_of_its_own():
    from torch.nn.modules.module import register_module_forward_hook

    model, x = _with_a_compiled_part(), torch.randn(4, 16)
    handle = register_module_forward_hook(lambda module, args, out: None)
    try:
        assert _compile_hook_warnings(lambda: shapetrace.trace(model, x))
    finally:
        handle.remove()


def test_nested_self_times():
    out = nested_self_times([("root", 0, 100), ("a", 10, 40), ("a.x", 15, 25), ("b", 50, 90)])
    assert out == {"root": (100, 30), "a": (30, 20), "a.x": (10, 10), "b": (40, 40)}
    assert sum(s for _, s in out.values()) == 100


def test_attribute_kernels_nested_ranges_and_idle_gaps():
    ranges = [("root", 0, 100), ("conv", 10, 20), ("relu", 30, 40)]
    # kernels: (launch, start, end) - conv's kernel runs after its range ends (asynchronous), idle between
    kernels = [(12, 50, 80), (35, 90, 95), (5, 20, 30), (None, 120, 130)]
    att = attribute_kernels(ranges, kernels)
    assert att.self == {"root": 20, "conv": 30, "relu": 5}  # root: its own kernel + the unlinked one
    assert att.total == {"root": 55, "conv": 30, "relu": 5}
    assert att.busy == 55 and att.kernel_sum == 55 and att.unlinked == 1
    assert att.window == 130
    assert att.idle_fraction == pytest.approx(1 - 55 / 130)


def test_attribute_kernels_overlapping_streams_are_not_counted_twice():
    ranges = [("root", 0, 100), ("a", 0, 10), ("b", 10, 20)]
    kernels = [(1, 0, 40), (11, 20, 60)]  # two streams overlapping on [20, 40]
    att = attribute_kernels(ranges, kernels)
    assert att.busy == 60 and att.kernel_sum == 80
    assert att.self["a"] == pytest.approx(30) and att.self["b"] == pytest.approx(30)
    assert att.total["root"] == pytest.approx(60)
    assert att.idle_fraction == pytest.approx(0.4)


def test_attribute_kernels_launch_outside_every_range():
    att = attribute_kernels([("root", 10, 20)], [(5, 30, 40)])
    assert att.outside == 10 and att.total["root"] == 0


def test_kineto_intervals_on_fake_cuda_events():
    from torch.autograd import DeviceType

    def ev(name, dev, kind, corr, linked, s, e):
        return types.SimpleNamespace(name=lambda: name, device_type=lambda: dev, activity_type=lambda: kind,
                                     correlation_id=lambda: corr, linked_correlation_id=lambda: linked,
                                     start_ns=lambda: s, end_ns=lambda: e)

    cpu, cuda = DeviceType.CPU, DeviceType.CUDA
    events = [
        ev("shapetrace/0", cpu, "user_annotation", 1, 0, 0, 100),
        ev("shapetrace/1", cpu, "user_annotation", 2, 0, 10, 50),
        ev("aten::conv2d", cpu, "cpu_op", 3, 0, 12, 40),
        ev("cudaLaunchKernel", cpu, "cuda_runtime", 900, 3, 20, 25),
        ev("implicit_gemm", cuda, "kernel", 900, 3, 60, 90),
        ev("aten::relu", cpu, "cpu_op", 4, 0, 55, 60),
        ev("relu_kernel", cuda, "kernel", 901, 4, 95, 99),  # no runtime event: falls back to the op
        ev("shapetrace/1", cuda, "gpu_user_annotation", 2, 0, 60, 90),  # not a kernel
        ev("cudaGraphLaunch", cpu, "cuda_runtime", 902, 0, 70, 71),
    ]
    ranges, kernels, graphs = kineto_intervals(events)
    assert ranges == {0: (0, 100), 1: (10, 50)}
    assert kernels == [(20, 60, 90), (55, 95, 99)]
    assert graphs == 1


def test_kineto_intervals_without_activity_type_as_in_torch_2_11():
    """torch 2.11 (the GPU machine's) has no ``activity_type()``: kinds come from device, name, annotation."""
    from torch.autograd import DeviceType

    def ev(name, dev, corr, linked, s, e, annotation=False):
        return types.SimpleNamespace(name=lambda: name, device_type=lambda: dev, is_user_annotation=lambda: annotation,
                                     correlation_id=lambda: corr, linked_correlation_id=lambda: linked,
                                     start_ns=lambda: s, end_ns=lambda: e)

    cpu, cuda = DeviceType.CPU, DeviceType.CUDA
    events = [
        ev("cudaDeviceSynchronize", cpu, 3, 0, -30, -5),  # before the forward; CUPTI id 3 = the conv's op id
        ev("Device Synchronize", cuda, 3, 0, -30, -5),  # the wait on the device timeline: no kernel
        ev("shapetrace/0", cpu, 1, 0, 0, 100, annotation=True),
        ev("shapetrace/1", cpu, 2, 0, 10, 50, annotation=True),
        ev("aten::conv2d", cpu, 3, 0, 12, 40),
        ev("cudaLaunchKernel", cpu, 900, 3, 20, 25),
        ev("implicit_gemm", cuda, 900, 3, 60, 90),
        ev("aten::relu", cpu, 4, 0, 55, 60),
        ev("cuLaunchKernel", cpu, 901, 4, 56, 57),  # driver API
        ev("relu_kernel", cuda, 901, 4, 95, 99),
        ev("Memcpy DtoD (Device -> Device)", cuda, 902, 3, 99, 100),  # no runtime event: the conv op's start
        ev("shapetrace/1", cuda, 2, 0, 60, 90, annotation=True),
        ev("cudaGraphLaunch", cpu, 903, 0, 70, 71),
    ]
    ranges, kernels, graphs = kineto_intervals(events)
    assert ranges == {0: (0, 100), 1: (10, 50)}
    assert kernels == [(20, 60, 90), (56, 95, 99), (12, 99, 100)]  # not -30: the sync's id is another namespace
    assert graphs == 1
    att = attribute_kernels([("root", *ranges[0]), ("conv", *ranges[1])], kernels)
    assert att.self == {"root": 4.0, "conv": 31.0} and att.kernel_sum == 35.0  # the sync span is not a kernel


def test_event_kind_names_on_old_torch():
    from torch.autograd import DeviceType

    from shapetrace.tracer.timing import event_kind

    def ev(name, dev, annotation=False):
        return types.SimpleNamespace(name=lambda: name, device_type=lambda: dev, is_user_annotation=lambda: annotation)

    cpu, cuda = DeviceType.CPU, DeviceType.CUDA
    assert event_kind(ev("cudaLaunchKernelExC", cpu)) == "cuda_runtime"
    assert event_kind(ev("cuLaunchKernel", cpu)) == "cuda_runtime"
    assert event_kind(ev("cudnn::conv", cpu)) == "cpu_op"  # a namespaced op, not an API call
    assert event_kind(ev("custom_block", cpu)) == "cpu_op"
    assert event_kind(ev("my range", cpu, annotation=True)) == "user_annotation"
    assert event_kind(ev("Stream Wait Event", cuda)) == "cuda_sync"
    assert event_kind(ev("Memset (Device)", cuda)) == "gpu_memset"
    assert event_kind(ev("void at::native::vectorized_elementwise_kernel<4>", cuda)) == "kernel"


def test_kineto_intervals_reads_real_cpu_profiler_ranges():
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof, record_function("shapetrace/0"), \
            record_function("shapetrace/1"):
        torch.randn(8, 8) @ torch.randn(8, 8)
    ranges, kernels, _ = kineto_intervals(prof.profiler.kineto_results.events())
    assert set(ranges) == {0, 1} and kernels == []
    assert ranges[0][0] <= ranges[1][0] <= ranges[1][1] <= ranges[0][1]


def test_peak_stack_children_do_not_clobber_parents():
    # allocator: parent starts at 100; child A peaks at 400 and frees back to 150; child B peaks at 300
    stack = PeakStack()
    stack.push(100, 100)          # parent
    stack.push(120, 130)          # A starts (parent peaked at 130 before A)
    a = stack.pop(400)
    stack.push(150, 150)          # B
    b = stack.pop(300)
    parent = stack.pop(160)
    assert (a, b, parent) == (280, 150, 300)


def test_quantile():
    assert quantile([1, 2, 3, 4], 0.5) == 2.5
    assert quantile([5], 0.9) == 5
    assert quantile(list(range(11)), 0.1) == pytest.approx(1.0)


def test_summarise_adds_up_even_when_stalls_hit_different_calls():
    from shapetrace.tracer.timing import central_repeats, summarise

    # root = a + b + 1 ms of its own; each repeat, a stall of 50 ms hits a different child
    reps = []
    for i in range(8):
        a, b = (51.0 if i % 2 else 1.0), (1.0 if i % 2 else 51.0)
        reps.append({0: (a + b + 1, 1.0, a + b + 1), 1: (a, a, a), 2: (b, b, b)})
    out = summarise(reps, root=0)
    assert sum(v["self"] for v in out.values()) == pytest.approx(out[0]["total"])
    assert out[1]["median"] == 26.0  # medians: 26 + 26 + 1 != the root's 53
    assert central_repeats([5, 1, 9, 3, 7, 2, 8, 4]) == [0, 3, 4, 7]
    assert central_repeats([3.0]) == [0]


def test_of_three_repeats_the_middle_one_is_kept_and_of_two_both():
    from shapetrace.tracer.timing import central_repeats

    assert central_repeats([10.0, 300.0, 11.0]) == [2]
    assert central_repeats([10.0, 300.0]) == [0, 1]


class SleepsLongOnce(nn.Module):
    """Sleeps 10 ms per forward, and 600 ms in its fifth forward (one of the timed runs): a stall."""

    def __init__(self) -> None:
        super().__init__()
        self.forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).forwards += 1  # on the class: a profile puts the instance's attributes back
        time.sleep(0.6 if type(self).forwards == 5 else 0.01)
        return x + 1


def test_one_stalled_repeat_of_three_sets_neither_the_forward_times_nor_the_calls_and_they_agree():
    SleepsLongOnce.forwards = 0
    trace = _profile(nn.Sequential(SleepsLongOnce()), torch.zeros(2), warmup=0, repeat=3)
    t = trace.timing
    # the 600 ms forward is left out of every number (a mean with it would be over 200 ms)
    assert 10 <= t["forward_ms"] < 150 and 10 <= t["profiled_ms"] < 150
    assert 10 <= trace.calls[0].timing["total_ms"] <= t["profiled_ms"]
    assert t["attributed_ms"] == pytest.approx(trace.calls[0].timing["total_ms"], abs=1e-5)
    assert "times are interquartile means" in str(trace.table(width=200))


def test_profile_table_fits_the_width_by_leaving_out_columns_and_says_which(resnet_trace):
    from shapetrace.renderers.table import render_text

    text = render_text(resnet_trace, width=100)
    lines = text.splitlines()
    header = lines[2]
    assert max(len(x) for x in lines) <= 100
    for col in ("layer", "class", "output shapes", "ms", "%", "self ms", "FLOPs", "act mem"):
        assert col in header
    note = " ".join(x.strip() for x in lines[lines.index(next(x for x in lines if x.startswith("left out"))):])
    assert note.startswith("left out to fit 100 columns: input shapes, params")
    left_out = note.split(": ", 1)[1].split(" (")[0].split(", ")
    full_header = render_text(resnet_trace, width=None).splitlines()[2]
    optional = ["input shapes", "params", "call", "peak mem", "host ms", "FLOP/s"]
    assert [c for c in optional if c in full_header and c not in header] == sorted(left_out, key=optional.index)
    assert "(1,10)" in text and "(1,64,32,32)" in text  # the shapes are still there, whole


@pytest.mark.parametrize("width", [60, 70, 80])
def test_profile_table_in_the_modules_view_fits_the_width_too(resnet_trace, width):
    from shapetrace.renderers.table import render_text

    lines = render_text(resnet_trace, view="modules", width=width).splitlines()
    assert max(len(x) for x in lines) <= width
    assert any(x.startswith(f"left out to fit {width} columns:") for x in lines)


@pytest.mark.parametrize("view", ["calls", "modules"])
def test_a_slow_profile_still_fits_60_columns_by_shortening_the_names_further(resnet_trace, view):
    import copy

    from shapetrace.renderers.table import render_text

    slow = copy.deepcopy(resnet_trace)  # times of 10 s and more: the ms columns widen
    for c in slow.calls:
        for key in ("total_ms", "self_ms"):
            c.timing[key] *= 1000
    lines = render_text(slow, view=view, width=60).splitlines()
    assert max(len(x) for x in lines) <= 60


def test_profile_table_without_a_width_limit_has_every_column(resnet_trace):
    from shapetrace.renderers.table import render_text

    text = render_text(resnet_trace, width=None)
    header = text.splitlines()[2]
    for col in ("input shapes", "output shapes", "params", "self ms", "act mem"):
        assert col in header
    assert "left out to fit" not in text
    assert "trainable: left out, equal to params in every row (the totals give it)" in text


@pytest.mark.parametrize("fmt", ["text", "md", "html"])
def test_every_table_format_reports_the_overhead_with_the_profile(resnet_trace, fmt):
    from shapetrace.renderers.table import render

    t = resnet_trace.timing
    text = render(resnet_trace, fmt, width=None)
    assert f"{t['forward_ms']:.3f} plain, {t['profiled_ms']:.3f} profiled ({t['overhead']:.2f}× overhead)" in text
    assert f"{t['attributed_ms']:.3f}" in text and "cpu-wall on cpu" in text


def test_the_profile_csv_holds_raw_numbers(resnet_trace):
    import csv
    import io

    from shapetrace.renderers.table import render_csv

    rows = list(csv.DictReader(io.StringIO(render_csv(resnet_trace))))
    conv = next(r for r in rows if r["class"] == "Conv2d")
    call = next(c for c in resnet_trace.calls if c.cls == "Conv2d")
    assert int(conv["FLOPs"]) == call.flops and int(conv["act mem"]) == call.memory.activation_bytes
    assert int(conv["FLOP/s"]) == round(call.flops / (call.timing.total_ms * 1e-3))


def test_a_gpu_profile_table_shows_host_time_kernel_time_and_idle_share(resnet_trace):
    from shapetrace.renderers.table import render_text

    gpu = shapetrace.Trace.from_json(resnet_trace.to_json())  # the same calls, as a GPU profile would read
    gpu.timing.update(kind="cuda-kernels", device="cuda:0", kernel_ms=4.25, gpu_idle_fraction=0.125)
    for c in gpu.calls:
        if c.timing:
            c.timing.update(kind="cuda-kernels", cpu_ms=c.timing["total_ms"] * 3)
            c.memory["peak_bytes"] = 3 * 2**20
    text = render_text(gpu, width=None)
    header = text.splitlines()[2]
    assert "host ms" in header and "peak mem" in header
    assert "host ms" not in render_text(resnet_trace, width=None)
    root = next(x for x in text.splitlines() if x.startswith("(root)"))
    assert f"{gpu.calls[0].timing['cpu_ms']:.3f}" in root and root.endswith("3.0 MiB")
    assert "GPU kernel time (ms):" in text and "4.250" in text
    assert "GPU idle:" in text and "12.5% of the forward" in text


def test_modules_view_keeps_the_highest_peak_of_a_modules_calls():
    from shapetrace.renderers.table import render_text

    trace = _profile(_Chunked(), torch.randn(2, 15, 8))
    for c, peak in zip(trace.calls_of("rnn"), (1, 5, 2)):
        c.memory["peak_bytes"] = peak * 2**20
    row = next(x for x in render_text(trace, view="modules", width=None).splitlines() if "LSTM" in x)
    assert row.endswith("5.0 MiB")


def test_the_calls_notes_are_listed_once_per_text_below_the_table():
    from shapetrace.renderers.table import render_text

    trace = _profile(_Chunked(), torch.randn(2, 15, 8))
    text = render_text(trace, width=None)
    notes = [x for x in text.splitlines() if "analytic LSTM formula" in x]
    assert notes == ["flops: analytic LSTM formula (FlopCounterMode counted 0): rnn, rnn#1, rnn#2"]


def test_plain_trace_table_leaves_no_column_out():
    from shapetrace.renderers.table import render_text

    text = render_text(shapetrace.trace(torchvision.models.resnet18(num_classes=10).eval(), torch.randn(1, 3, 64, 64)))
    assert "input shapes" in text.splitlines()[2] and "params" in text.splitlines()[2]
    assert "left out to fit" not in text


# ---- the command line ----------------------------------------------------------------------------------

def test_cli_profile_json_and_exit_codes(tmp_path):
    from click.testing import CliRunner

    from shapetrace.cli import main

    runner = CliRunner()
    out = tmp_path / "t.json"
    plot = tmp_path / "bars.svg"
    res = runner.invoke(main, ["profile", "resnet18", "--input", "1,3,32,32", "--device", "cpu", "--warmup", "0",
                               "--repeat", "2", "-o", str(out), "--plot", str(plot)])
    assert res.exit_code == 0, res.output
    trace = shapetrace.load(out)
    assert trace.timing["repeats"] == 2 and trace.calls[0].timing and trace.calls[0].flops
    assert plot.read_text().startswith("<?xml")
    assert runner.invoke(main, ["profile", "resnet18", "--input", "1,3,32,32", "--dtype", "fp7"]).exit_code == 2
    assert runner.invoke(main, ["profile", "no-such-model-xyz"]).exit_code == 2
    if not torch.cuda.is_available():
        res = runner.invoke(main, ["profile", "resnet18", "--device", "cuda"])
        assert res.exit_code == 2 and "cuda" in res.output.lower() and "Traceback" not in res.output
    res = runner.invoke(main, ["profile", "resnet18", "--input", "1,3,32", "--device", "cpu", "--repeat", "1"])
    assert res.exit_code == 1 and "Traceback" not in res.output


def test_cli_profile_with_grad_and_train_runs_so_and_the_footer_says_how_it_ran(tmp_path):
    from click.testing import CliRunner

    from shapetrace.cli import main

    base = ["profile", "resnet18", "--input", "2,3,32,32", "--device", "cpu", "--warmup", "0", "--repeat", "1"]
    res = CliRunner().invoke(main, [*base, "--train", "--grad", "-o", str(tmp_path / "t.json")])
    assert res.exit_code == 0, res.output
    trace = shapetrace.load(tmp_path / "t.json")
    assert trace.meta["grad"] is True and trace.meta["training"] is True
    assert "train, autograd on, 1 repeat, no warm-up" in " ".join(str(trace.table(width=None)).split())
    res = CliRunner().invoke(main, [*base, "-o", str(tmp_path / "t.txt"), "--width", "0"])
    assert res.exit_code == 0, res.output
    assert "eval, no_grad, 1 repeat, no warm-up" in (tmp_path / "t.txt").read_text()


def test_cli_profile_modules_view_and_width(tmp_path):
    from click.testing import CliRunner

    from shapetrace.cli import main

    base = ["profile", "resnet18", "--input", "1,3,32,32", "--device", "cpu", "--warmup", "0", "--repeat", "1",
            "--top", "100"]
    res = CliRunner().invoke(main, [*base, "--view", "modules", "--width", "0", "-o", str(tmp_path / "t.txt")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "t.txt").read_text()
    assert "calls" in text.splitlines()[2] and "params" in text.splitlines()[2]
    relu = next(x.split() for x in text.splitlines() if x.strip().startswith("layer1.0.relu "))
    assert relu[:3] == ["layer1.0.relu", "ReLU", "×2"]  # torchvision's BasicBlock calls its relu twice
    assert "(ReLU, 2 calls)" in res.output  # the summary ranks modules, each call's self time added up
    res = CliRunner().invoke(main, [*base, "--width", "80", "-o", str(tmp_path / "narrow.txt")])
    assert res.exit_code == 0, res.output
    lines = (tmp_path / "narrow.txt").read_text().splitlines()
    assert max(len(x) for x in lines) <= 80


def test_cli_profile_heat_memory_on_cpu_is_refused_before_profiling(tmp_path):
    from click.testing import CliRunner

    from shapetrace.cli import main

    res = CliRunner().invoke(main, ["profile", "resnet18", "--device", "cpu", "--heat", "memory",
                                    "-o", str(tmp_path / "m.svg")])
    assert res.exit_code == 2 and "CUDA only" in res.output and "--heat activations" in res.output
    assert "profiling on" not in res.output and not (tmp_path / "m.svg").exists()


@requires_dot
def test_heat_by_activation_size_from_the_cli_with_legible_print_on_hot_nodes(tmp_path):
    from click.testing import CliRunner

    from shapetrace.cli import main
    from shapetrace.renderers.diagram import HEAT_SCALE

    saved = tmp_path / "p.json"
    base = ["--depth", "1"]
    res = CliRunner().invoke(main, ["profile", "resnet18", "--input", "1,3,32,32", "--device", "cpu", "--warmup",
                                    "0", "--repeat", "1", "-o", str(saved)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["render", str(saved), "--heat", "activations", "-f", "dot", *base])
    assert res.exit_code == 0, res.output
    dot = res.output
    assert "activation size" in dot  # the legend's title
    hot = [line for line in dot.splitlines() if f'fillcolor="{HEAT_SCALE[-1]}"' in line]
    assert hot and all('COLOR="#4a4a4a"' not in line and 'COLOR="#111111"' in line for line in hot)
    res = CliRunner().invoke(main, ["profile", "resnet18", "--input", "1,3,32,32", "--device", "cpu", "--warmup",
                                    "0", "--repeat", "1", "--heat", "activations", "-o", str(tmp_path / "a.svg"),
                                    *base])
    assert res.exit_code == 0, res.output
    assert "activation size" in (tmp_path / "a.svg").read_text()


@requires_dot
def test_cli_profile_draws_the_diagram_with_the_heat_overlay(tmp_path):
    import xml.etree.ElementTree as ET

    from click.testing import CliRunner

    from shapetrace.cli import main

    out = tmp_path / "heat.svg"
    res = CliRunner().invoke(main, ["profile", "resnet18", "--input", "1,3,32,32", "--device", "cpu", "--warmup",
                                    "0", "--repeat", "2", "--depth", "1", "-o", str(out)])
    assert res.exit_code == 0, res.output
    svg = out.read_text()
    ET.fromstring(svg)  # well-formed
    assert "time (self)" in svg  # the heat legend
    assert "layer4" in svg and " ms" in svg


# ---- the GPU code paths, driven on CPU with stand-ins for CUDA events and CUPTI kernels ------------------

def _driver(model, x):
    from shapetrace.tracer.engine import ModuleIndex
    from shapetrace.tracer.timing import _Run

    trace = shapetrace.trace(model, x)
    call_of = {(c.module, c.call_index): c.id for c in trace.calls}  # CallSkeleton.key (no module is shared here)
    return trace, call_of, _Run(), ModuleIndex(model)


def test_cuda_events_path_with_fake_events(monkeypatch):
    import time as _time

    from shapetrace.tracer import timing

    created = []

    class FakeEvent:
        def __init__(self, enable_timing: bool = False) -> None:
            self.t = None
            created.append(self)

        def record(self) -> None:
            self.t = _time.perf_counter_ns()

        def elapsed_time(self, other: FakeEvent) -> float:
            return (other.t - self.t) / 1e6

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.Tanh())).eval()
    x = torch.randn(4, 8)
    trace, call_of, run, index = _driver(model, x)
    timer = TimerProbe("events")
    with torch.no_grad():
        for _ in range(3):
            assert timing._instrumented(lambda: model(x), index, timer, torch.device("cpu"), call_of, run)
    assert len(created) == 1 + 2 * len(trace.calls)  # a reference and a pair per call, reused by later repeats
    stats = timing.summarise(run.repeats, 0)
    assert set(stats) == {c.id for c in trace.calls}
    assert sum(s["self"] for s in stats.values()) == pytest.approx(stats[0]["total"])
    assert all(s["self"] >= 0 for s in stats.values())


def _fake_cuda(monkeypatch):
    """CUDA's synchronize and events as stand-ins, so the GPU code runs on CPU tensors."""
    import time as _time

    class FakeEvent:
        def __init__(self, enable_timing: bool = False) -> None:
            self.t = None

        def record(self) -> None:
            self.t = _time.perf_counter_ns()

        def elapsed_time(self, other) -> float:
            return (other.t - self.t) / 1e6

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)


@pytest.mark.filterwarnings("ignore:CUDA is not available")
@pytest.mark.parametrize("profiler", ["raises", "sees no kernels"])
def test_gpu_timer_falls_back_to_cuda_events_and_says_why(monkeypatch, profiler):
    from shapetrace.renderers.table import render_text
    from shapetrace.tracer import timing

    _fake_cuda(monkeypatch)
    if profiler == "raises":
        class Broken:
            def __init__(self, *a, **k) -> None:
                pass

            def __enter__(self):
                raise RuntimeError("CUPTI_ERROR_NOT_INITIALIZED\nmore detail")

            def __exit__(self, *exc) -> None:
                return None

        monkeypatch.setattr(torch.profiler, "profile", Broken)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.Tanh())).eval()
    x = torch.randn(4, 8)
    trace, call_of, _, index = _driver(model, x)
    run, kind = timing._timed(model, (x,), {}, index, torch.device("cuda"), 1, 3, call_of, False, None, None)
    assert kind == timing.KIND_EVENTS and len(run.repeats) == 3
    expected = ("torch.profiler failed: CUPTI_ERROR_NOT_INITIALIZED" if profiler == "raises"
                else "torch.profiler recorded no CUDA kernels (CUPTI unavailable?)")
    assert run.fallback == ("profiler-error" if profiler == "raises" else "no-kernels")
    assert run.fallback_error == ("CUPTI_ERROR_NOT_INITIALIZED" if profiler == "raises" else None)
    timing._fill_timing(trace, run, kind)
    trace.timing = {"kind": kind, "device": "cuda", "fallback": run.fallback, "fallback_error": run.fallback_error,
                    "repeats": 3, "warmup": 1}
    assert f"GPU timer: CUDA events instead of torch.profiler: {expected}" in " ".join(
        render_text(trace, width=None).split())


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_profiler_path_with_synthetic_kernels(monkeypatch):
    from shapetrace.tracer import timing

    real = timing.kineto_intervals

    def with_kernels(events):
        ranges, _, graphs = real(events)
        # one 10 us kernel per range, launched at the range's start, running back to back after the forward
        end = max(e for _, e in ranges.values())
        kernels = [(s, end + 20_000 * i, end + 20_000 * i + 10_000) for i, (s, _) in enumerate(ranges.values())]
        return ranges, kernels, graphs + 1

    monkeypatch.setattr(timing, "kineto_intervals", with_kernels)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.Tanh())).eval()
    x = torch.randn(4, 8)
    trace, call_of, run, index = _driver(model, x)
    timer = TimerProbe("profiler")
    with torch.no_grad():
        assert timing._instrumented(lambda: model(x), index, timer, torch.device("cpu"), call_of, run)
    (rep,) = run.repeats
    assert len(rep) == len(trace.calls) == 6
    assert all(self_ms == pytest.approx(0.01) for _, self_ms, _ in rep.values())  # 10 us each: own kernel only
    assert rep[0][0] == pytest.approx(0.06)  # the root's inclusive device time: all six kernels
    assert run.kernel == [pytest.approx(0.06)] and run.busy == [pytest.approx(0.06)]
    assert 0 < run.idle[0] < 1 and run.graphs == 1


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_a_timed_repeat_in_which_the_profiler_saw_no_kernels_is_kept_with_no_device_time(monkeypatch):
    from shapetrace.tracer import timing

    _fake_cuda(monkeypatch)
    real, seen = timing.kineto_intervals, []

    def kernels_but_in_one_repeat(events):
        ranges, _, graphs = real(events)
        seen.append(None)
        if len(seen) == 4:  # the try, one warm-up, then timed repeats 1 and 2: none in the second
            return ranges, [], graphs
        start, end = ranges[min(ranges)]
        return ranges, [(start, end, end + 10_000)], graphs

    monkeypatch.setattr(timing, "kineto_intervals", kernels_but_in_one_repeat)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU()).eval()
    x = torch.randn(4, 8)
    trace, call_of, _, index = _driver(model, x)
    run, kind = timing._timed(model, (x,), {}, index, torch.device("cuda"), 1, 3, call_of, False, None, None)
    assert kind == timing.KIND_PROFILER and run.fallback is None
    assert len(run.repeats) == len(run.profiled) == 3 and run.no_kernels == 1  # every repeat asked for
    assert run.repeats[1][0][0] == 0.0 and run.kernel[1] == 0.0  # that repeat: no device time
    timing._notes(trace, {}, run, kind)
    assert trace.meta["timed_runs_without_kernels"] == 1


# ---- per-call times against an independent clock ----------------------------------------------------------

class Sleeps(nn.Module):
    """A module whose forward takes a known time: ``seconds`` of ``time.sleep``."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        import time

        time.sleep(self.seconds)
        return x


def test_the_root_time_matches_a_perf_counter_taken_around_the_same_forward():
    import time

    from shapetrace.tracer import timing

    model = nn.Sequential(nn.Linear(8, 8), Sleeps(0.02), nn.ReLU()).eval()
    x = torch.randn(4, 8)
    _, call_of, run, index = _driver(model, x)
    walls = []

    def forward():
        t0 = time.perf_counter()
        model(x)
        walls.append((time.perf_counter() - t0) * 1e3)

    timer = TimerProbe("wall")
    with torch.no_grad():
        assert timing._instrumented(forward, index, timer, torch.device("cpu"), call_of, run)
    (rep,) = run.repeats
    root_ms = rep[0][0]
    # the hooks' clock reads sit inside the forward: the root's span is within the outer clock's, and the
    # outer clock sees little more than the root (a unit slip of 1000x either way fails both bounds)
    assert 0.8 * walls[0] <= root_ms <= walls[0]
    assert root_ms >= 20  # the sleep alone


def test_a_known_sleep_inside_a_module_shows_in_its_self_time():
    import time

    model = nn.Sequential(nn.Linear(8, 8), Sleeps(0.03), nn.ReLU()).eval()
    t0 = time.perf_counter()
    trace = _profile(model, torch.randn(4, 8), warmup=0, repeat=2)
    wall_ms = (time.perf_counter() - t0) * 1e3
    sleeper = trace.calls_of("1")[0]
    # five forwards ran (shape pass, 2 plain, 2 timed), each sleeping 30 ms: the self time is the sleep,
    # and no more than one forward's share of the whole call's wall time
    assert 30 <= sleeper.timing["self_ms"] <= wall_ms / 5
    assert 30 <= trace.calls[0].timing["total_ms"] <= wall_ms / 5
    assert trace.calls[0].timing["total_ms"] >= sleeper.timing["total_ms"]


def test_a_layer_built_on_the_first_call_is_profiled_with_times_and_the_model_left_without_it():
    model = BuildsItsHead(features=8, hidden=8)
    trace = shapetrace.profile(model, torch.randn(4, 8), device="cpu", warmup=0, repeat=2)
    timed = {c.module: c.timing is not None for c in trace.calls}
    assert timed == {"": True, "body": True, "head": True, "head.0": True, "head.1": True}
    assert next(c for c in trace.calls if c.module == "head.1").memory.param_bytes == (8 * 2 + 2) * 4
    assert not hasattr(model, "head")


class _Jagged(nn.Module):
    """Runs a Linear on a jagged nested tensor: fine by itself, not under torch's FlopCounterMode."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 4)

    def forward(self, x):
        return self.linear(torch.nested.nested_tensor([x[:1], x[:2]], layout=torch.jagged)).values()


def test_a_forward_the_flop_counter_cannot_run_is_profiled_without_flops_saying_why():
    from torch.utils.flop_counter import FlopCounterMode

    model, x = _Jagged(), torch.randn(2, 8)
    with pytest.raises(Exception, match="dispatch"), FlopCounterMode(display=False):  # the oracle: torch itself
        model(x)
    trace = shapetrace.profile(model, x, device="cpu", warmup=0, repeat=1)
    assert trace.failure is None and all(c.flops is None for c in trace.calls)
    assert all(c.timing is not None for c in trace.calls)
    assert "dispatch" in trace.meta["flops_unavailable"]
    table = str(trace.table())
    assert "FLOPs:" in table and "FlopCounterMode could not run this forward" in table


def test_a_forward_that_fails_by_itself_still_fails_the_profile():
    class Broken(nn.Module):
        def forward(self, x):
            return x @ torch.randn(3, 3)

    with pytest.raises(shapetrace.TraceFailed, match="mat1 and mat2|size mismatch|cannot be multiplied"):
        shapetrace.profile(Broken(), torch.randn(2, 4), device="cpu", warmup=0, repeat=1)


class FailsFromCall(nn.Module):
    """Runs its first ``ok`` calls, then raises: a forward that changes between the profile's runs."""

    def __init__(self, ok: int) -> None:
        super().__init__()
        self.linear, self.ok, self.calls = nn.Linear(4, 4), ok, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.ok:
            raise RuntimeError(f"failed on call {self.calls}")
        return self.linear(x)


def test_a_forward_failing_in_a_timed_run_raises_trace_failed_naming_the_layer_and_the_run():
    model = nn.Sequential(nn.Linear(4, 4), FailsFromCall(ok=3), nn.Linear(4, 2))
    with pytest.raises(shapetrace.TraceFailed) as info:
        # the shape pass is call 1, and the timed runs start from the state it started from: run 1 makes calls
        # 1 (instrumented) and 2 (plain), run 2 calls 3 (plain) and 4 (instrumented), which fails
        _profile(model, torch.randn(2, 4), warmup=1, repeat=2)
    trace = info.value.trace
    assert trace.failed_call.module == "1" and trace.failure.message == "failed on call 4"
    assert trace.meta["failed_in_timed_run"] == {"run": 2, "of": 3, "warmup": 1}
    assert "failed in 1 (FailsFromCall) in timed run 1 of 2 of the profile" in str(info.value)
    assert all(c.error is None for c in trace.calls)  # the shape pass's calls, which all returned


class FailsBeforeItsLayer(nn.Module):
    """Raises on its fourth call, before calling ``linear``: the shape pass runs through, and so does timed run 1
    (calls 1 and 2: the timed runs start from the state the shape pass started from); run 2's instrumented
    forward (call 4, after its plain one) fails."""

    def __init__(self) -> None:
        super().__init__()
        self.linear, self.calls = nn.Linear(2, 2), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 4:
            raise ValueError("failed on call 4")
        return self.linear(x)


def test_a_timed_run_failure_leaves_the_shape_pass_calls_as_they_ran_and_the_table_counts_them():
    model = nn.Sequential(nn.BatchNorm1d(2), FailsBeforeItsLayer())
    with pytest.raises(shapetrace.TraceFailed) as info:
        _profile(model, torch.randn(4, 2), warmup=1, repeat=3)
    trace = info.value.trace
    assert [c.label for c in trace.calls] == ["(root)", "0", "1", "1.linear"]
    assert all(c.error is None for c in trace.calls)  # in the shape pass every call returned
    assert trace.failed_call.label == "1" and trace.failure.message == "failed on call 4"
    table = str(trace.table(width=0))
    # the shape pass's counts, then which timed run failed where: true of the forward the rows show
    assert "4 calls started, 4 returned (the forward failed in 1 in timed run 1 of 3 of the profile)" in table
    assert "✗ ValueError: failed on call 4" in table  # the failed call's row still says what was raised


def test_a_forward_failing_where_no_hook_sees_it_says_the_layer_is_not_known():
    model = nn.Sequential(nn.Linear(4, 4), FailsFromCall(ok=2))
    with pytest.raises(shapetrace.TraceFailed) as info:  # call 3: the plain forward of the second timed run
        _profile(model, torch.randn(2, 4), warmup=0, repeat=2)
    assert info.value.trace.failure.call is None
    assert "in one of its forwards run without hooks, so the layer is not known" in str(info.value)
    table = str(info.value.trace.table())  # the table says the same, not "outside any module"
    assert "outside any module" not in table
    assert "failed in timed run 2 of 2 of the profile, in a forward run without hooks" in table


class CallsMoreAfterItsFirstRun(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.step, self.runs = Sleeps(0.002), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.runs += 1
        for _ in range(1 if self.runs == 1 else 3):
            x = self.step(x)
        return x


def test_calls_only_the_timed_runs_made_are_noted_on_the_call_whose_self_time_holds_them():
    # the timed runs start from the state the shape pass started from: run 1's instrumented forward is the
    # first again (one step), runs 2 and 3 make three steps, and one of them is the middle repeat
    trace = _profile(CallsMoreAfterItsFirstRun(), torch.randn(2), warmup=0, repeat=3)
    root = trace.calls[0]
    assert [(n.code, n.count) for n in root.notes] == [("untraced-calls", 2)]
    assert trace.meta["untraced_timed_calls"] == 2
    assert root.timing["self_ms"] >= 2 * 2  # the two untraced sleeps of 2 ms land in the root's self time


@requires_dot
def test_cli_profile_heat_time_on_a_failing_forward_draws_the_partial_diagram_and_names_the_layer(tmp_path):
    from click.testing import CliRunner

    from shapetrace.cli import main

    out = tmp_path / "p.svg"
    res = CliRunner().invoke(main, ["profile", "torchvision.models:resnet18", "--input", "1,3,32", "--device", "cpu",
                                    "--heat", "time", "-o", str(out)])
    assert res.exit_code == 1, res.output
    assert "drawn without the heat overlay" in res.output
    assert "the forward failed in conv1 (Conv2d)" in res.output and "needs a profiled trace" not in res.output
    assert out.read_text().startswith("<?xml")


@requires_dot
def test_render_of_a_saved_profile_colours_the_diagram_by_time_as_profile_does(tmp_path):
    from click.testing import CliRunner

    from shapetrace.cli import main

    saved = tmp_path / "p.json"
    runner = CliRunner()
    assert runner.invoke(main, ["profile", "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=2",
                                "-i", "2,4", "--device", "cpu", "--warmup", "0", "--repeat", "2", "-o",
                                str(saved)]).exit_code == 0
    rendered = runner.invoke(main, ["render", str(saved), "-f", "dot"])
    assert rendered.exit_code == 0 and "time (self)" in rendered.output
    memory = runner.invoke(main, ["render", str(saved), "--heat", "memory", "-f", "dot"])
    assert memory.exit_code == 2 and "peak memory" in memory.output  # a CPU profile has no peaks


def _write_fails_later(path, after_calls: int) -> None:
    """A model file whose ``FailsLater`` forward raises once it has been called more than ``after_calls`` times."""
    path.write_text(
        "import torch\nfrom torch import nn\n\n"
        "class FailsLater(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.lin, self.calls = nn.Linear(4, 4), 0\n\n"
        "    def forward(self, x):\n        self.calls += 1\n"
        f"        if self.calls > {after_calls}:\n            raise RuntimeError('boom')\n        return self.lin(x)\n")


def test_cli_profile_failing_in_a_timed_run_says_the_plot_was_not_written(tmp_path):
    from click.testing import CliRunner

    from shapetrace.cli import main

    _write_fails_later(tmp_path / "later.py", after_calls=2)
    plot = tmp_path / "times.svg"
    result = CliRunner().invoke(main, ["profile", f"{tmp_path / 'later.py'}:FailsLater", "-i", "2,4", "--device", "cpu",
                                       "--warmup", "0", "--repeat", "2", "--plot", str(plot)])
    assert result.exit_code == 1, result.output
    assert f"--plot {plot}: not written, the forward failed" in result.stderr and not plot.exists()


def test_cli_profile_notes_name_the_timed_run_that_failed_not_a_failure_before_any(tmp_path):
    from click.testing import CliRunner

    from shapetrace.cli import main

    _write_fails_later(tmp_path / "later.py", after_calls=3)  # call 4: run 2's instrumented forward
    plot = tmp_path / "times.svg"
    result = CliRunner().invoke(main, ["profile", f"{tmp_path / 'later.py'}:FailsLater", "-i", "2,4", "--device", "cpu",
                                       "--warmup", "0", "--repeat", "3", "--plot", str(plot), "--heat", "time",
                                       "-o", str(tmp_path / "flow.dot")])
    assert result.exit_code == 1, result.output
    assert "in timed run 2 of 3" in result.stderr
    assert f"--plot {plot}: not written, the forward failed in timed run 2 of 3, and no timings were kept" \
        in result.stderr
    assert "--heat time: the forward failed in timed run 2 of 3, and no timings were kept" in result.stderr
    assert "before anything was" not in result.stderr


def test_cli_profile_heat_with_a_text_format_says_it_only_affects_diagrams(tmp_path):
    from click.testing import CliRunner

    from shapetrace.cli import main

    result = CliRunner().invoke(main, ["profile", "torch.nn:Linear", "--arg", "in_features=8", "--arg", "out_features=2",
                                       "-i", "2,8", "--device", "cpu", "--warmup", "0", "--repeat", "1",
                                       "--heat", "activations"])
    assert result.exit_code == 0, result.output
    assert "note: --heat only affects diagram formats" in result.stderr


class _CallsElsewhereLater(nn.Module):
    """The traced forward calls ``slow`` inside ``wrap``; every later forward calls it from the root."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = Sleeps(0.002)
        self.wrap = _Wrap(self.slow)
        self.runs = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.runs += 1
        return self.wrap(x, True) if self.runs == 1 else self.slow(self.wrap(x, False))


class _Wrap(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, use: bool) -> torch.Tensor:
        return self.inner(x) if use else x


def test_a_call_the_timed_runs_make_under_another_parent_is_noted():
    trace = _profile(_CallsElsewhereLater(), torch.randn(2), warmup=0, repeat=2)
    moved = [c.label for c in trace.calls if any(n.code == "moved-in-timed-runs" for n in c.notes)]
    assert moved == ["wrap.inner"] and trace.meta["calls_moved_in_timed_runs"] == 1
    assert "called under another parent in the timed runs" in str(trace.table())


# ---- what profile() accepts, as trace() does -----------------------------------------------------------

@pytest.mark.filterwarnings("ignore::UserWarning")  # DataParallel without GPUs
@pytest.mark.parametrize(("wrap", "kind"), [(lambda m: torch.compile(m, backend="eager"), "torch.compile"),
                                            (nn.DataParallel, "DataParallel")])
def test_a_model_wrapped_by_torch_compile_or_data_parallel_is_profiled_unwrapped_as_trace_does(wrap, kind):
    inner = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    trace = _profile(wrap(inner), torch.randn(2, 4), warmup=0, repeat=1)
    assert trace.meta["unwrapped"] == [kind]
    assert [c.label for c in trace.calls] == ["(root)", "0", "1"] and all(c.timing for c in trace.calls)


@pytest.mark.parametrize("model", [lambda x: x, None])
def test_profiling_what_is_not_a_module_says_what_to_pass_as_trace_does(model):
    with pytest.raises(shapetrace.UnsupportedModel, match="shapetrace traces a torch.nn.Module"):
        _profile(model, torch.randn(2))


@pytest.mark.parametrize("dtype", [torch.int8, torch.int64, torch.bool, torch.complex64])
def test_a_torch_dtype_that_is_not_floating_point_is_a_usage_error(dtype):
    with pytest.raises(ProfileUsageError, match="not a floating-point dtype.*use bf16, fp16 or fp32"):
        _profile(nn.Linear(4, 2), torch.randn(2, 4), dtype=dtype)


# ---- a layer that runs in only some of the timed forwards ----------------------------------------------

def test_a_call_absent_from_the_slowest_repeats_is_averaged_per_forward_not_dropped_with_them():
    from shapetrace.tracer.intervals import repeat_weights, summarise

    # call 1 (10 ms) runs in repeats 0 and 4 only, which are the slowest: trimming all repeats together by
    # the root's time would drop exactly those two and report call 1 as 0 ms
    reps = [{0: (10.5, 0.5, 10.5), 1: (10.0, 10.0, 10.0)} if i in (0, 4) else {0: (0.5 + i / 100, 0.5 + i / 100, 0.5)}
            for i in range(8)]
    out = summarise(reps, root=0)
    assert out[1]["runs"] == 2 and out[0]["runs"] == 8
    assert out[1]["total"] == pytest.approx(10.0 * 2 / 8)  # its time per forward: 0 in the 6 repeats without it
    assert out[0]["self"] + out[1]["self"] == pytest.approx(out[0]["total"])  # still adds up
    weights = repeat_weights(reps, root=0)  # each group of alike repeats trimmed by itself
    assert sum(weights.values()) == pytest.approx(1.0) and weights[0] == weights[4] == pytest.approx(1 / 8)


class RunsItsLayerTwice(nn.Module):
    """Calls ``slow`` in its first two forwards only: the profile's shape pass and its first timed run."""

    def __init__(self) -> None:
        super().__init__()
        self.slow, self.forwards = Sleeps(0.005), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        return self.slow(x) if self.forwards <= 2 else x + 0


def test_a_layer_that_ran_in_some_timed_runs_is_noted_with_its_time_per_forward():
    trace = _profile(RunsItsLayerTwice(), torch.randn(2), warmup=0, repeat=4)
    slow = trace.calls_of("slow")[0]
    assert slow.notes == [Note("ran-in-some-timed-runs", count=1, of=4)]
    assert trace.meta["calls_in_some_timed_runs"] == 1
    # the one run where it ran is the slowest of the four, yet it counts, with a quarter of the weight
    assert slow.timing["total_ms"] == pytest.approx(slow.timing["median_ms"] / 4, abs=1e-5)
    _check_adds_up(trace)
    assert "ran in 1 of 4 timed runs" in str(trace.table(width=0))
    assert shapetrace.load(trace.to_json()).calls_of("slow")[0].notes == slow.notes


# ---- a profile without timings says why, in facts a renderer reads -------------------------------------

def test_a_profile_whose_shape_pass_failed_is_marked_as_a_profile_with_its_failure():
    with pytest.raises(shapetrace.TraceFailed) as info:
        _profile(nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2)), torch.randn(2, 3))
    trace = info.value.trace
    assert trace.meta["profiled"] is True and trace.failure is not None and trace.timing is None
    assert "failed_in_timed_run" not in trace.meta  # failed in the shape pass, before any timed run


def test_a_profile_whose_timed_run_failed_is_marked_as_a_profile_with_the_run():
    with pytest.raises(shapetrace.TraceFailed) as info:
        _profile(FailsBeforeItsLayer(), torch.randn(2, 2), warmup=0, repeat=2)
    trace = info.value.trace
    assert trace.meta["profiled"] is True and trace.meta["failed_in_timed_run"] == {"run": 2, "of": 2, "warmup": 0}
    assert trace.timing is None and all(c.timing is None for c in trace.calls)


def test_a_profile_on_the_meta_device_says_so_and_has_no_timings():
    trace = shapetrace.profile(nn.Linear(4, 2), torch.randn(2, 4), device="meta")
    assert trace.meta["profiled"] is True and trace.meta["device"] == "meta" and trace.failure is None
    assert trace.timing is None and trace.calls[0].timing is None and trace.calls[0].flops == 2 * 2 * 4 * 2


def test_a_profile_in_train_mode_leaves_the_global_random_state_as_it_found_it():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).train()  # each of its ~9 forwards draws a mask
    x = torch.randn(2, 4)
    before = torch.get_rng_state()
    trace = _profile(model, x, warmup=1, repeat=3)
    assert trace.meta["training"] is True
    assert torch.equal(torch.get_rng_state(), before)


class _Recursive(nn.Module):
    """A tree-style model: the forward calls the module itself ``depth`` times, then its Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, depth: int = 2) -> torch.Tensor:
        if depth:
            x = self(x, depth - 1)
        return self.lin(x)


def test_modules_view_counts_a_module_that_calls_itself_once_not_once_per_nesting():
    from torch.utils.flop_counter import FlopCounterMode

    from shapetrace.renderers.rows import forward_ms, table_rows
    from shapetrace.renderers.table import render_text

    trace = _profile(_Recursive(), torch.randn(1, 8), repeat=1, warmup=0)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        _Recursive()(torch.randn(1, 8))
    assert fc.get_total_flops() == 3 * 2 * 8 * 8 == 384
    root = next(r for r in table_rows(trace, view="modules") if r.name == "(root)")
    assert root.calls == 3
    assert root.flops == fc.get_total_flops() == trace.calls[0].flops
    assert root.timing.total_ms == trace.calls[0].timing["total_ms"] == forward_ms(trace)
    assert root.timing.cpu_ms == trace.calls[0].timing["cpu_ms"]
    assert root.timing.self_ms == pytest.approx(sum(c.timing["self_ms"] for c in trace.calls_of("")))
    lines = render_text(trace, view="modules", width=None).splitlines()
    header = next(x for x in lines if " % " in x).split()
    row = next(x for x in lines if x.startswith("(root)")).split()
    percent_at = len(row) - len(header) + header.index("%")
    assert float(row[percent_at]) <= 100


class _OneBfloat16LayerFirst(nn.Module):
    """Float32 input and almost all parameters float32, but the first parameter registered is bfloat16."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(16, 16).to(torch.bfloat16)
        self.b = nn.Linear(16, 2000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x.to(torch.bfloat16)).float())


def test_the_timed_dtype_of_a_model_with_parameters_of_two_dtypes_says_mixed_not_the_first_ones():
    from shapetrace.tracer.timing import DTYPE_MIXED

    trace = _profile(_OneBfloat16LayerFirst(), torch.randn(4, 16), repeat=1, warmup=0)
    assert set(trace.model.param_dtypes) == {"bfloat16", "float32"}
    assert trace.timing["dtype"] == DTYPE_MIXED == "mixed"


def test_the_timed_line_of_a_mixed_model_gives_each_dtypes_share_of_the_parameter_bytes():
    trace = _profile(_OneBfloat16LayerFirst(), torch.randn(4, 16), repeat=1, warmup=0)
    float32 = (16 * 2000 + 2000) * 4  # b's weight and bias
    bfloat16 = (16 * 16 + 16) * 2  # a's
    share = 100 * float32 / (float32 + bfloat16)
    timed = next(line for line in trace.table().render("text").splitlines() if line.startswith("Timed"))
    assert f"mixed: float32 {share:.1f}%, bfloat16 {100 - share:.1f}% of parameter bytes" in timed


def test_the_timed_dtype_is_the_parameters_one_dtype_or_without_parameters_the_inputs():
    half = _profile(nn.Linear(4, 4).to(torch.bfloat16), torch.randn(2, 4, dtype=torch.bfloat16), repeat=1, warmup=0)
    assert half.timing["dtype"] == "bfloat16"
    no_params = _profile(nn.ReLU(), torch.randn(2, 4, dtype=torch.float64), repeat=1, warmup=0)
    assert no_params.timing["dtype"] == "float64"
    cast = _profile(nn.Linear(4, 4), torch.randn(2, 4), dtype="bf16", repeat=1, warmup=0)
    assert cast.timing["dtype"] == "bfloat16"
