"""Shape-only tracing (``device="meta"``): the shapes of a real run, for forwards that read their integer inputs.

The oracle is the same model traced for real on the CPU: every call's input and output shapes must match,
call by call. Models: the AWD-LSTM classifier (BPT3C reads how many rows of each chunk are padding), a
BERT-style encoder with an attention mask and a GPT-2-style decoder from ``transformers`` configurations,
and a Llama-shaped decoder with grouped-query attention.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import shapetrace
from shapetrace.gallery.text import AWD_LSTM, awd_lstm_clas_config, get_text_classifier, pad_batch
from shapetrace.tracer.records import Trace, iter_tensors
from shapetrace.tracer.shape_only import ShapeOnlyMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from llama_shape import LlamaDecoder, LlamaShape


def call_shapes(trace: Trace) -> list[tuple[str, int, list[tuple[int, ...]], list[tuple[int, ...]]]]:
    """(module, call index, input shapes, output shapes) of every call, in order."""
    def shapes(value) -> list[tuple[int, ...]]:
        return [tuple(m.shape) for _, m in iter_tensors(value)]
    return [(c.module, c.call_index, shapes([c.inputs, c.kwargs]), shapes(c.outputs)) for c in trace.calls]


def assert_same_calls(meta: Trace, real: Trace) -> None:
    assert len(meta.calls) == len(real.calls)
    for m, r in zip(call_shapes(meta), call_shapes(real)):
        assert m == r


def small_awd_classifier() -> nn.Module:
    """The AWD-LSTM classifier's structure at a small width, so the real CPU run is quick."""
    config = {**awd_lstm_clas_config, "emb_sz": 16, "n_hid": 24}
    torch.manual_seed(0)
    return get_text_classifier(AWD_LSTM, 100, 2, config=config).eval()


def padded_documents(n: int, longest: int) -> torch.Tensor:
    """``n`` documents from ``longest`` tokens down to 100, padded the way fastai's classifier batches are."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.linspace(longest, 100, n).long().tolist()
    return pad_batch([torch.randint(2, 100, (k,), generator=g) for k in lengths])


def test_awd_lstm_classifier_on_meta_has_the_shapes_of_the_real_run() -> None:
    x = padded_documents(64, 1440)
    meta = shapetrace.trace(small_awd_classifier(), x, device="meta")
    real = shapetrace.trace(small_awd_classifier(), x)
    assert_same_calls(meta, real)
    chunk_calls = [c for c in meta.calls if c.module == "0.module"]
    assert len(chunk_calls) == 20  # 1440 tokens in 72-token chunks


def test_shape_only_trace_keeps_integer_inputs_real_and_weights_on_meta() -> None:
    x = padded_documents(4, 200)
    meta = shapetrace.trace(small_awd_classifier(), x, device="meta")
    encoder_call = meta.calls_of("0")[0]
    (ids,) = [m for _, m in iter_tensors(encoder_call.inputs)]
    assert ids.device == "cpu"  # the token ids the BPT3C loop reads
    lstm_out = [m for _, m in iter_tensors(meta.calls_of("0.module.rnns.0")[0].outputs)]
    assert {m.device for m in lstm_out} == {"meta"}


def test_shape_only_trace_leaves_the_model_unchanged() -> None:
    model = small_awd_classifier()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    shapetrace.trace(model, padded_documents(4, 200), device="meta")
    after = model.state_dict()
    assert all(after[k].device.type == "cpu" and torch.equal(after[k], v) for k, v in state.items())
    for name, m in model.named_modules():
        for attr, value in vars(m).items():
            tensors = value if isinstance(value, list) else [value]
            assert not any(isinstance(t, torch.Tensor) and t.is_meta for t in tensors), f"{name}.{attr} left on meta"
    real = shapetrace.trace(model, padded_documents(4, 200))  # and it still runs for real
    assert real.calls[0].outputs is not None


class CountAtenOps(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
def test_recurrent_layers_on_meta_are_answered_without_running_time_steps(cls: type[nn.RNNBase]) -> None:
    with torch.device("meta"):
        rnn = cls(8, 16, num_layers=2, batch_first=True, bidirectional=True)
    x = torch.empty(3, 4000, 8, device="meta")
    with CountAtenOps() as counted, ShapeOnlyMode():
        out = rnn(x)
    assert out[0].shape == (3, 4000, 32)
    assert len(counted.ops) < 20, "no per-timestep cell ops"
    real = cls(8, 16, num_layers=2, batch_first=True, bidirectional=True)(torch.randn(3, 5, 8))
    hidden, real_hidden = (out[1], real[1]) if cls is not nn.LSTM else (out[1][0], real[1][0])
    assert hidden.shape == real_hidden.shape


def test_packed_sequences_on_meta_have_the_real_shapes() -> None:
    lstm = nn.LSTM(8, 16)
    packed = nn.utils.rnn.pack_padded_sequence(torch.randn(7, 3, 8), [7, 5, 2])
    real = lstm(packed)
    with torch.device("meta"):
        meta_lstm = nn.LSTM(8, 16)
    meta_packed = nn.utils.rnn.PackedSequence(packed.data.to("meta"), packed.batch_sizes)
    with ShapeOnlyMode():
        out = meta_lstm(meta_packed)
    assert out[0].data.shape == real[0].data.shape
    assert out[1][0].shape == real[1][0].shape


def _hf_models():
    transformers = pytest.importorskip("transformers")
    bert = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64)
    gpt2 = transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
    return {"bert": (transformers.BertModel, bert), "gpt2": (transformers.GPT2LMHeadModel, gpt2)}


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_transformers_models_with_attention_masks_on_meta(name: str) -> None:
    cls, config = _hf_models()[name]
    torch.manual_seed(0)
    model = cls(config).eval()
    ids = torch.randint(0, 100, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 10:] = 0  # the second sequence is padded
    meta = shapetrace.trace(model, input_ids=ids, attention_mask=mask, device="meta")
    real = shapetrace.trace(model, input_ids=ids, attention_mask=mask)
    assert_same_calls(meta, real)


@pytest.mark.parametrize("name", ["mixtral", "qwen2_moe"])
def test_transformers_mixture_of_experts_models_run_their_grouped_products_on_meta(name: str) -> None:
    # Their experts call torch._grouped_mm, whose meta kernel refuses the float32 the CPU kernel accepts.
    transformers = pytest.importorskip("transformers")
    common = {"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 64}
    if name == "mixtral":
        cls, config = transformers.MixtralForCausalLM, transformers.MixtralConfig(
            intermediate_size=64, num_local_experts=4, num_experts_per_tok=2, **common)
    else:
        cls, config = transformers.Qwen2MoeForCausalLM, transformers.Qwen2MoeConfig(
            intermediate_size=64, moe_intermediate_size=16, shared_expert_intermediate_size=32, num_experts=4,
            num_experts_per_tok=2, **common)
    torch.manual_seed(0)
    model = cls(config).eval()
    ids = torch.randint(0, 90, (1, 8))
    assert_same_calls(shapetrace.trace(model, input_ids=ids, device="meta"), shapetrace.trace(model, input_ids=ids))


def test_llama_shaped_decoder_with_grouped_query_attention_on_meta() -> None:
    shape = LlamaShape(vocab=64, width=32, layers=2, heads=4, kv_heads=2, mlp=48)
    torch.manual_seed(0)
    model = LlamaDecoder(shape).eval()
    ids = torch.randint(0, 64, (2, 9))
    assert_same_calls(shapetrace.trace(model, ids, device="meta"), shapetrace.trace(model, ids))


class KeepsPositives(nn.Module):
    """Output size depends on the values: nothing can say its shape without computing them."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y[y > 0]


def test_a_data_dependent_output_size_names_the_op_and_suggests_a_real_run() -> None:
    with pytest.raises(shapetrace.TraceFailed) as info:
        shapetrace.trace(KeepsPositives(), torch.randn(2, 4), device="meta")
    message = str(info.value)
    assert "shape-only tracing cannot follow" in message
    assert "__getitem__" in message or "nonzero" in message
    assert "small input" in message
    assert info.value.trace.calls[0].error is not None  # the root call failed, after linear completed
    assert info.value.trace.calls[1].error is None


class CountsInPlace(nn.Module):
    """Writes a count computed from activations into a real integer tensor, then slices by it."""

    def __init__(self) -> None:
        super().__init__()
        self.score, self.proj = nn.Linear(4, 1), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        keep = torch.zeros_like(lengths)
        keep.add_((self.score(x).squeeze(-1) > -100).sum(-1))
        return self.proj(x[:, :int(keep.max())])


def test_an_in_place_write_of_a_meta_result_into_a_real_tensor_fails_rather_than_leave_it_stale():
    x, lengths = torch.randn(2, 6, 4), torch.tensor([6, 4])
    assert shapetrace.trace(CountsInPlace(), x, lengths).calls[-1].outputs.shape == (2, 6, 3)
    with pytest.raises(shapetrace.TraceFailed, match="writes a result computed on 'meta' into a real int64"):
        shapetrace.trace(CountsInPlace(), x, lengths, device="meta")


class SizedByRealValues(nn.Module):
    """Output sizes that follow from real integer or boolean inputs, not from the activations."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.rnn, self.out = nn.Embedding(20, 6), nn.LSTM(6, 5, batch_first=True), nn.Linear(5, 3)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        packed = nn.utils.rnn.pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
        o = nn.utils.rnn.pad_packed_sequence(self.rnn(packed)[0], batch_first=True)[0]
        picked = self.out(o[mask[:, :o.shape[1]]])
        return picked.repeat_interleave(lengths[:1].expand(picked.shape[0]), dim=0)


def test_sizes_that_follow_from_real_masks_lengths_and_counts_match_the_cpu_on_meta():
    g = torch.Generator().manual_seed(0)
    ids, lengths = torch.randint(1, 20, (3, 7), generator=g), torch.tensor([4, 7, 2])
    mask = torch.rand(3, 7, generator=g) > 0.4
    model = SizedByRealValues()
    assert_same_calls(shapetrace.trace(model, ids, lengths, mask, device="meta"),
                      shapetrace.trace(model, ids, lengths, mask))


class DoubleInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.double())


def test_a_dtype_mismatch_the_cpu_refuses_fails_on_meta_too():
    for device in (None, "meta"):
        with pytest.raises(shapetrace.TraceFailed, match="must have the same dtype"):
            shapetrace.trace(DoubleInput(), torch.randn(2, 8), device=device)


def test_a_dtype_mismatch_on_meta_names_two_operands_and_their_two_dtypes():
    with pytest.raises(shapetrace.TraceFailed) as e:
        shapetrace.trace(nn.Linear(8, 2), torch.ones(2, 8, dtype=torch.long), device="meta")
    assert "mat1 and mat2 must have the same dtype, but got int64 and float32 (" in str(e.value)


def test_a_bias_of_another_dtype_on_meta_is_named_as_the_bias():
    linear = nn.Linear(8, 2)
    linear.bias.data = linear.bias.data.double()
    with pytest.raises(shapetrace.TraceFailed) as e:
        shapetrace.trace(linear, torch.randn(2, 8), device="meta")
    assert "mat1 and bias must have the same dtype, but got float32 and float64 (" in str(e.value)


def _failure_messages(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The failing call's error message, traced on the CPU (the oracle: torch's own kernel) and on meta."""
    messages = []
    for device in (None, "meta"):
        with pytest.raises(shapetrace.TraceFailed) as info:
            shapetrace.trace(model, x, device=device)
        messages.append(info.value.trace.failed_call.error)
    return messages


def test_a_convolution_given_the_wrong_channels_fails_on_meta_with_the_cpus_message():
    model = torchvision.models.resnet18(num_classes=10).eval()
    model.layer3[0].conv1 = nn.Conv2d(64, 256, 3, 2, 1, bias=False)  # 128 channels arrive
    cpu, meta = _failure_messages(model, torch.randn(1, 3, 64, 64))
    assert "expected input[1, 128, 8, 8] to have 64 channels, but got 128 channels instead" in cpu
    assert meta == cpu


def test_a_transposed_convolution_given_the_wrong_channels_fails_on_meta_as_on_the_cpu():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ConvTranspose2d(8, 4, 2, stride=2)).eval()  # 16 arrive, 8 expected
    cpu, meta = _failure_messages(model, torch.randn(3, 10, 10))  # unbatched: the CPU names it with a batch of 1
    assert "expected input[1, 16, 8, 8] to have 8 channels, but got 16 channels instead" in cpu
    assert meta == cpu


def test_embedding_ids_out_of_range_fail_on_meta_as_on_the_cpu():
    model = nn.Embedding(100, 8)
    ids = torch.tensor([[3, 250]])
    for device in (None, "meta"):
        with pytest.raises(shapetrace.TraceFailed, match="index out of range"):
            shapetrace.trace(model, ids, device=device)


def test_a_transformer_layer_run_step_by_step_on_meta_is_named_with_a_warning():
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True).eval()
    with pytest.warns(UserWarning, match="step by step") as seen:
        meta = shapetrace.trace(layer, torch.randn(2, 5, 8), device="meta")
    assert meta.meta["fused_layers_stepwise_on_meta"] == ["(root)"]
    # the caller's line, not shapetrace's own code (conftest wraps the tracer's _finish: a caller too)
    assert not seen[0].filename.startswith(str(Path(shapetrace.__file__).parent))
    assert "fused_layers_stepwise_on_meta" not in shapetrace.trace(layer.train(), torch.randn(2, 5, 8),
                                                                    device="meta").meta


class _Rotary(nn.Module):
    """Caches a table on itself the first time it sees a length: in a name that held None, and in a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.cached = None
        self.table: dict[int, torch.Tensor] = {}

    def forward(self, x):
        n = x.shape[1]
        if self.cached is None:
            self.cached = torch.arange(n, dtype=x.dtype, device=x.device)[:, None].expand(n, 4).clone()
        if n not in self.table:
            self.table[n] = torch.ones(n, 4, dtype=x.dtype, device=x.device)
        return self.proj(x) + self.cached + self.table[n]


def test_caches_a_forward_fills_on_meta_are_put_back_so_the_next_real_forward_runs():
    model, x = _Rotary(), torch.randn(2, 5, 4)
    assert shapetrace.trace(model, x, device="meta").outputs.shape == (2, 5, 4)
    assert model.cached is None and model.table == {}
    assert model(x).shape == (2, 5, 4)  # no meta tensor left for the CPU forward to read


class _MyEncoderLayer(nn.TransformerEncoderLayer):
    """A user's subclass: it inherits the fused fast path (and its own class name)."""


def test_a_subclass_of_a_transformer_layer_run_step_by_step_on_meta_is_named_too():
    model = nn.Sequential(_MyEncoderLayer(8, 2, 16, batch_first=True)).eval()
    with torch.no_grad():
        cpu = shapetrace.trace(model, torch.randn(2, 5, 8))
    assert [c.cls for c in cpu.calls] == ["Sequential", "_MyEncoderLayer"]  # fused on the CPU: no sub-layer calls
    with pytest.warns(UserWarning, match="step by step"):
        meta = shapetrace.trace(model, torch.randn(2, 5, 8), device="meta")
    assert meta.meta["fused_layers_stepwise_on_meta"] == ["0"]


def test_the_command_line_keeps_integer_inputs_real_on_meta(tmp_path):
    from click.testing import CliRunner

    from shapetrace.cli import main

    model_file = tmp_path / "packed.py"
    model_file.write_text(
        "import torch.nn as nn\n"
        "class Packed(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.e = nn.Embedding(20, 6); self.rnn = nn.LSTM(6, 5, batch_first=True)\n"
        "    def forward(self, ids, lengths):\n"
        "        p = nn.utils.rnn.pack_padded_sequence(self.e(ids), lengths, batch_first=True, enforce_sorted=False)\n"
        "        return nn.utils.rnn.pad_packed_sequence(self.rnn(p)[0], batch_first=True)[0]\n")
    args = ["trace", f"{model_file}:Packed", "-i", "long:3,5:1..20", "-i", "long:3:1..6", "-f", "json"]
    meta = CliRunner().invoke(main, [*args, "--device", "meta"])
    cpu = CliRunner().invoke(main, args)
    assert meta.exit_code == 0 and cpu.exit_code == 0, meta.output
    assert_same_calls(shapetrace.load(meta.stdout), shapetrace.load(cpu.stdout))


class CastsDown(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.second(self.first(x).to(torch.bfloat16))


def test_under_cpu_autocast_mixed_dtypes_pass_on_meta_as_on_the_cpu():
    cpu = shapetrace.trace(CastsDown(), torch.randn(2, 8))
    meta = shapetrace.trace(CastsDown(), torch.randn(2, 8), device="meta")
    assert_same_calls(meta, cpu)


def test_activation_totals_on_meta_match_the_cpu_where_layers_write_in_place():
    """ReLU(inplace=True) answered by a shape rule on meta moves the tensor's version as the CPU kernel does,
    so its output counts as a tensor of its own on both, not as the input passed through unchanged."""
    from shapetrace.renderers.rows import totals

    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    cpu, meta = (totals(shapetrace.trace(model, x, device=d)) for d in (None, "meta"))
    assert (meta.activation_tensors, meta.activation_bytes) == (cpu.activation_tensors, cpu.activation_bytes)


def test_a_meta_trace_under_autocast_warns_that_meta_takes_no_part_in_it() -> None:
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    x = torch.randn(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cpu = shapetrace.trace(model, x)
        with pytest.warns(shapetrace.ShapetraceWarning, match="take no part in autocast"):
            meta = shapetrace.trace(model, x, device="meta")
    assert cpu.calls[1].outputs.dtype == "bfloat16"  # torch's own autocast, on the CPU
    assert meta.meta["autocast_ignored_on_meta"] == ["cpu:bfloat16"]
    assert [c.outputs.shape for c in meta.calls] == [c.outputs.shape for c in cpu.calls]


def test_a_meta_trace_without_autocast_says_nothing_of_it() -> None:
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU()).eval()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        meta = shapetrace.trace(model, torch.randn(4, 16), device="meta")
    assert "autocast_ignored_on_meta" not in meta.meta
