"""FLOPs per call: FlopCounterMode snapshots, the fused-attention formulas and the recurrent formulas."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils.flop_counter import FlopCounterMode

import shapetrace
from shapetrace.tracer.flops import CUSTOM_FLOPS, rnn_flops, rnn_step_flops

COMPUTES = ("Linear", "Conv1d", "Conv2d", "LSTM", "GRU", "RNN", "LSTMCell", "MultiheadAttention",
            "TransformerEncoderLayer")


def _profile(model: nn.Module, *args, **kw):
    return shapetrace.profile(model, *args, device="cpu", warmup=0, repeat=1, **kw)


def _assert_no_zero_compute(trace) -> None:
    for c in trace.calls:
        if c.cls in COMPUTES:
            assert c.flops and c.flops > 0, f"{c.label} ({c.cls}) has {c.flops} FLOPs"


def test_resnet18_leaves_sum_to_flopcountermode_total():
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    trace = _profile(model, x)
    assert fc.get_total_flops() > 0
    assert sum(c.flops for c in trace.leaves()) == fc.get_total_flops()
    assert trace.calls[0].flops == fc.get_total_flops()
    for c in trace.calls:  # inclusive: a parent is at least the sum of its children
        assert c.flops >= sum(ch.flops for ch in trace.children(c))
    _assert_no_zero_compute(trace)


def test_lstm_flops_equal_the_analytic_count():
    # nn.LSTM(8, 16, num_layers=2) on 5 steps x 3 rows, written out by hand:
    # per step and row: 8*H*(I+H) + 8*H (biases) + 13*H (elementwise), H=16;
    # layer 0: I=8  -> 3072 + 128 + 208 = 3408;  layer 1: I=16 -> 4096 + 128 + 208 = 4432
    expected = 15 * 3408 + 15 * 4432
    lstm = nn.LSTM(8, 16, num_layers=2)
    trace = _profile(lstm, torch.randn(5, 3, 8))
    assert trace.calls[0].flops == expected == 117600
    assert any(n.code == "flops-analytic" for n in trace.calls[0].notes)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        lstm(torch.randn(5, 3, 8))
    assert fc.get_total_flops() == 0  # why the formula is needed


def test_rnn_formulas_by_hand():
    assert rnn_step_flops("GRU", 4, 8) == 6 * 8 * 12 + 6 * 8 + 11 * 8
    assert rnn_step_flops("RNN_TANH", 4, 8, bias=False) == 2 * 8 * 12 + 2 * 8
    assert rnn_step_flops("LSTM", 4, 8, proj_size=2) == 8 * 8 * (4 + 2) + 8 * 8 + 13 * 8 + 2 * 8 * 2
    gru = nn.GRU(4, 8, bidirectional=True, batch_first=True)
    # 2 rows x 7 steps, 2 directions, one layer
    assert rnn_flops(gru, (torch.randn(2, 7, 4),)) == 2 * 14 * rnn_step_flops("GRU", 4, 8)
    cell = nn.LSTMCell(4, 8)
    assert rnn_flops(cell, (torch.randn(3, 4),)) == 3 * rnn_step_flops("LSTM", 4, 8)
    lstm = nn.LSTM(4, 8, num_layers=2, bidirectional=True, proj_size=3)
    per = rnn_step_flops("LSTM", 4, 8, proj_size=3) + rnn_step_flops("LSTM", 6, 8, proj_size=3)
    assert rnn_flops(lstm, (torch.randn(5, 2, 4),)) == 2 * 10 * per


def test_packed_sequence_counts_only_real_steps():
    lstm = nn.LSTM(4, 8, batch_first=True)
    x = torch.randn(3, 6, 4)
    packed = pack_padded_sequence(x, torch.tensor([6, 4, 2]), batch_first=True)
    trace = _profile(lstm, packed)
    assert trace.calls[0].flops == 12 * rnn_step_flops("LSTM", 4, 8)


class _CallsRecurrent(nn.Module):
    """Calls its recurrent layer with the arguments ``call`` builds: positional, keyword or a mix."""

    def __init__(self, layer: nn.Module, call) -> None:
        super().__init__()
        self.layer = layer
        self.call = call

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        out = self.call(self.layer, x, h)
        return out[0] if isinstance(out, tuple) else out


RECURRENT_CALLS = {
    "positional": lambda layer, x, h: layer(x),
    "input-keyword": lambda layer, x, h: layer(input=x),
    "both-keywords": lambda layer, x, h: layer(input=x, hx=h),
    "hx-keyword": lambda layer, x, h: layer(x, hx=h),
}


@pytest.mark.parametrize("style", RECURRENT_CALLS)
def test_lstm_counts_the_documented_formula_however_its_input_is_passed(style):
    # nn.LSTM(10, 20) on 7 steps x 3 rows, per step and row 8*H*(I+H) + 8*H + 13*H with H=20, I=10
    expected = 21 * (8 * 20 * 30 + 8 * 20 + 13 * 20)
    h0 = (torch.zeros(1, 3, 20), torch.zeros(1, 3, 20))
    trace = _profile(_CallsRecurrent(nn.LSTM(10, 20), RECURRENT_CALLS[style]), torch.randn(7, 3, 10), h0)
    assert [c.flops for c in trace.calls] == [expected, expected] == [109620, 109620]


@pytest.mark.parametrize("style", RECURRENT_CALLS)
def test_gru_and_cells_count_the_documented_formula_however_their_input_is_passed(style):
    call = RECURRENT_CALLS[style]
    gru = _profile(_CallsRecurrent(nn.GRU(4, 8), call), torch.randn(5, 2, 4), torch.zeros(1, 2, 8))
    assert gru.calls[0].flops == 10 * (6 * 8 * 12 + 6 * 8 + 11 * 8)
    cell = nn.LSTMCell(4, 8)
    lstm_cell = _profile(_CallsRecurrent(cell, call), torch.randn(3, 4), (torch.zeros(3, 8), torch.zeros(3, 8)))
    assert lstm_cell.calls[0].flops == 3 * (8 * 8 * 12 + 8 * 8 + 13 * 8)
    rnn_cell = _profile(_CallsRecurrent(nn.RNNCell(4, 8), call), torch.randn(3, 4), torch.zeros(3, 8))
    assert rnn_cell.calls[0].flops == 3 * (2 * 8 * 12 + 2 * 8 + 2 * 8)


class _Chunked(nn.Module):
    """A stand-in for BPT3C: one LSTM run once per chunk in a Python loop, then a head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.rnn = nn.LSTM(8, 16, batch_first=True)
        self.head = nn.Linear(16, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        outs, state = [], None
        for chunk in tokens.split(4, dim=1):
            out, state = self.rnn(self.emb(chunk), state)
            outs.append(out)
        return self.head(torch.cat(outs, 1)[:, -1])


def test_chunked_lstm_has_flops_per_chunk_call_and_parents_include_them():
    model = _Chunked().eval()
    trace = _profile(model, torch.randint(0, 50, (2, 12)))
    rnn = trace.calls_of("rnn")
    assert [c.call_index for c in rnn] == [0, 1, 2]
    per_chunk = 2 * 4 * rnn_step_flops("LSTM", 8, 16)
    assert [c.flops for c in rnn] == [per_chunk] * 3
    assert trace.calls[0].flops == 3 * per_chunk + 2 * 2 * 16 * 2  # head: 2 rows, 16 -> 2
    _assert_no_zero_compute(trace)


def test_transformer_fast_path_is_counted_like_the_slow_path():
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval()
    x = torch.randn(2, 10, 32)
    trace = _profile(layer, x)
    assert trace.calls[0].flops and trace.calls[0].flops > 0
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=CUSTOM_FLOPS) as fc:
            layer(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    assert trace.calls[0].flops == fc.get_total_flops()


def test_multihead_attention_fast_path_is_counted():
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    x = torch.randn(2, 10, 32)
    trace = _profile(mha, x, x, x)
    n, e, seq = 20, 32, 10
    assert trace.calls[0].flops == 2 * n * e * 3 * e + 4 * 2 * seq * seq * e + 2 * n * e * e
    _assert_no_zero_compute(trace)


@pytest.mark.parametrize("flops", [False])
def test_flops_off(flops):
    trace = _profile(nn.Linear(3, 4), torch.randn(2, 3), flops=flops)
    assert trace.calls[0].flops is None


def test_meta_device_gives_flops_and_memory_without_timing():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 10), nn.LSTM(10, 4))
    x = torch.randn(2, 3, 16, 16)
    on_cpu = _profile(model, x)
    on_meta = shapetrace.profile(model, x, device="meta")
    assert [c.flops for c in on_meta.calls] == [c.flops for c in on_cpu.calls]
    assert [c.memory for c in on_meta.calls] == [c.memory for c in on_cpu.calls]
    assert on_meta.timing is None and all(c.timing is None for c in on_meta.calls)
    _assert_no_zero_compute(on_meta)
