"""The text gallery models (AWD-LSTM, BPT3C classifier, language model) against fastai 2.8.12's numbers.

fastai is never imported: the facts (../shared/facts/chapter15-fastai-2.8.md) are recorded here. The
state_dict keys were derived from fastai 2.8's module structure, then checked against real fastai 2.8.12
(torch 2.14.1, in a scratch environment outside this repository): keys, order and shapes are identical, a
fastai state_dict loads with strict=True, and the outputs agree after loading it; ``pad_batch`` gives the very
tensor fastai's ``pad_input_chunk`` gives for the 200/150/100/60 documents. The structure:
* ``SequentialRNN(SentenceEncoder, PoolingLinearClassifier)`` -> prefixes ``0.`` and ``1.``;
  ``SentenceEncoder`` stores the AWD-LSTM as ``module`` -> ``0.module.``.
* ``AWD_LSTM`` registers ``encoder`` (nn.Embedding), ``encoder_dp`` (EmbeddingDropout holding that same
  embedding as ``emb``: state_dict lists the shared weight under both names), ``rnns`` (ModuleList of
  WeightDropout), ``input_dp``, ``hidden_dps`` (no parameters).
* ``WeightDropout.__init__`` deletes the LSTM's ``weight_hh_l0`` parameter and registers a copy on itself
  as ``weight_hh_l0_raw``; its own parameters come before its child's in the state_dict, and the LSTM keeps
  ``weight_ih_l0``, ``bias_ih_l0``, ``bias_hh_l0`` in its registration order: ``rnns.0.weight_hh_l0_raw``,
  ``rnns.0.module.weight_ih_l0``, ``rnns.0.module.bias_ih_l0``, ``rnns.0.module.bias_hh_l0``.
* ``PoolingLinearClassifier.layers`` is a Sequential of ``LinBnDrop`` (lin_first=False): [BatchNorm1d,
  Dropout, Linear(bias=False), ReLU] -> ``1.layers.0.0.*`` (BatchNorm), ``1.layers.0.2.weight`` (Linear).
* ``LinearDecoder`` registers ``decoder`` (Linear) and ``output_dp`` -> ``1.decoder.weight``,
  ``1.decoder.bias``.
"""

from __future__ import annotations

import copy

import pytest
import torch
from fastai_checks import calls_per_class as _calls
from fastai_checks import keys_digest
from torch import nn

from shapetrace.gallery.layers import LinBnDrop, SigmoidRange
from shapetrace.gallery.text import (
    AWD_LSTM,
    EmbeddingDropout,
    LinearDecoder,
    PoolingLinearClassifier,
    RNNDropout,
    SentenceEncoder,
    SequentialRNN,
    WeightDropout,
    awd_lstm_clas_config,
    awd_lstm_clas_split,
    awd_lstm_lm_config,
    awd_lstm_lm_split,
    get_language_model,
    get_text_classifier,
    masked_concat_pool,
    pad_batch,
)


def calls_per_class_noeval(m: nn.Module, *args) -> dict[str, int]:
    """Calls per module class in one forward, in the mode the model is in (a fresh hidden state first)."""
    return _calls(m, *args, eval_mode=False)

LENGTHS = (200, 150, 100, 60)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())  # parameters() counts a shared/tied Parameter once


def docs(lengths=LENGTHS, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, 1000, (n,), generator=g) for n in lengths]


@pytest.fixture(scope="module")
def clas() -> SequentialRNN:
    torch.manual_seed(0)
    return get_text_classifier(AWD_LSTM, 1000, 2, seq_len=72, max_len=1440).eval()


@pytest.fixture(scope="module")
def lm() -> SequentialRNN:
    torch.manual_seed(0)
    return get_language_model(AWD_LSTM, 1000).eval()


def lstm_keys(prefix: str, shapes: list[tuple[int, int]]) -> dict[str, tuple]:
    out = {}
    for i, (n_in, n_hid) in enumerate(shapes):
        out[f"{prefix}rnns.{i}.weight_hh_l0_raw"] = (4 * n_hid, n_hid)
        out[f"{prefix}rnns.{i}.module.weight_ih_l0"] = (4 * n_hid, n_in)
        out[f"{prefix}rnns.{i}.module.bias_ih_l0"] = (4 * n_hid,)
        out[f"{prefix}rnns.{i}.module.bias_hh_l0"] = (4 * n_hid,)
    return out


LSTM_SHAPES = [(400, 1152), (1152, 1152), (1152, 400)]


# --------------------------------------------------------------------------------------------- padding

def test_pad_batch_layout():
    x = pad_batch(docs())
    assert x.shape == (4, 200) and x.dtype == torch.long
    is_pad = x == 1
    leading = [int(row.long().cumprod(0).sum()) for row in is_pad]
    trailing = [int(row.flip(0).long().cumprod(0).sum()) for row in is_pad]
    assert leading == [0, 0, 72, 72]
    assert trailing == [0, 50, 28, 68]
    for row, doc, lead in zip(x, docs(), leading):
        assert torch.equal(row[lead:lead + len(doc)], doc)
    assert torch.equal(pad_batch([[5, 6], [7, 8]]), torch.tensor([[5, 6], [7, 8]]))
    assert pad_batch([[2] * 10, [3] * 4], pad_idx=0, seq_len=4).tolist()[1] == [0, 0, 0, 0, 3, 3, 3, 3, 0, 0]


# --------------------------------------------------------------------------------------------- classifier

def test_classifier_params_and_head(clas):
    assert n_params(clas) == 20_735_880
    assert isinstance(clas[0], SentenceEncoder) and isinstance(clas[0].module, AWD_LSTM)
    assert clas[0].bptt == 72 and clas[0].max_len == 1440 and clas[0].pad_idx == 1
    head = clas[1]
    assert isinstance(head, PoolingLinearClassifier) and head.bptt == 72
    flat = [c for block in head.layers for c in block]
    assert all(isinstance(b, LinBnDrop) for b in head.layers)
    assert [type(c) for c in flat] == [nn.BatchNorm1d, nn.Dropout, nn.Linear, nn.ReLU,
                                       nn.BatchNorm1d, nn.Dropout, nn.Linear]
    assert flat[0].num_features == 1200 and flat[1].p == pytest.approx(0.4)
    assert (flat[2].in_features, flat[2].out_features, flat[2].bias) == (1200, 50, None)
    assert flat[4].num_features == 50 and flat[5].p == pytest.approx(0.1)
    assert (flat[6].in_features, flat[6].out_features, flat[6].bias) == (50, 2, None)


def test_classifier_state_dict_keys_match_fastai(clas):
    expected = {"0.module.encoder.weight": (1000, 400), "0.module.encoder_dp.emb.weight": (1000, 400)}
    expected.update(lstm_keys("0.module.", LSTM_SHAPES))
    for i, (n_in, n_out) in enumerate([(1200, 50), (50, 2)]):
        expected.update({f"1.layers.{i}.0.weight": (n_in,), f"1.layers.{i}.0.bias": (n_in,),
                         f"1.layers.{i}.0.running_mean": (n_in,), f"1.layers.{i}.0.running_var": (n_in,),
                         f"1.layers.{i}.0.num_batches_tracked": (), f"1.layers.{i}.2.weight": (n_out, n_in)})
    sd = clas.state_dict()
    assert list(sd) == list(expected)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    get_text_classifier(AWD_LSTM, 1000, 2).load_state_dict(sd, strict=True)


def record_calls(model: SequentialRNN) -> tuple[list, list]:
    awd = model[0].module
    calls: list[tuple] = []
    handles = [awd.register_forward_hook(lambda m, a, o: calls.append(("awd", tuple(a[0].shape))))]
    for i, rnn in enumerate(awd.rnns):
        handles.append(rnn.module.register_forward_hook(
            lambda m, a, o, i=i: calls.append((f"lstm{i}", tuple(a[0].shape)))))
    return calls, handles


def test_bpt3c_three_chunk_calls(clas):
    x = pad_batch(docs())
    fed = []
    calls, handles = record_calls(clas)
    handles.append(clas[0].module.register_forward_pre_hook(lambda m, a: fed.append(a[0].clone())))
    try:
        with torch.no_grad():
            logits, out, out2 = clas(x)
    finally:
        for h in handles:
            h.remove()
    assert [shape for who, shape in calls if who == "awd"] == [(2, 72), (4, 72), (3, 56)]
    assert [shape for who, shape in calls if who == "lstm0"] == [(2, 72, 400), (4, 72, 400), (3, 56, 400)]
    assert [shape for who, shape in calls if who == "lstm1"] == [(2, 72, 1152), (4, 72, 1152), (3, 56, 1152)]
    assert [shape for who, shape in calls if who == "lstm2"] == [(2, 72, 1152), (4, 72, 1152), (3, 56, 1152)]
    # each chunk runs exactly the rows whose chunk does not start with padding (the batch is sorted)
    for chunk, start in zip(fed, (0, 72, 144)):
        rows = (x[:, start] != 1).nonzero().flatten().tolist()
        assert rows == list(range(len(rows)))
        assert torch.equal(chunk, x[rows, start:start + 72])
    assert out.shape == (4, 200, 400) and out2 is out
    assert logits.shape == (4, 2)
    # rows 2 and 3 were not run on the first chunk: padded back with zeros
    assert bool((out[2:, :72] == 0).all()) and bool((out[:2, :72] != 0).any())


def test_classifier_digest_and_calls_are_fastai_2_8_12s(clas):
    # checked against fastai 2.8.12: state_dict digest (26 entries in order with shapes) and the calls per module
    # class on the padded (4,200) batch; the head's single ReLU call is the same in fastai (one shared object)
    assert keys_digest(clas) == (26, "5cba11e87e33c62b")
    assert calls_per_class_noeval(clas, pad_batch(docs())) == {
        "SequentialRNN": 1, "SentenceEncoder": 1, "AWD_LSTM": 3, "EmbeddingDropout": 3, "RNNDropout": 9,
        "WeightDropout": 9, "LSTM": 9, "PoolingLinearClassifier": 1, "Sequential": 1, "LinBnDrop": 2,
        "BatchNorm1d": 2, "Dropout": 2, "Linear": 2, "ReLU": 1}


def test_short_batch_is_one_call(clas):
    calls, handles = record_calls(clas)
    try:
        with torch.no_grad():
            logits, out, _ = clas(pad_batch(docs((50, 50))))
    finally:
        for h in handles:
            h.remove()
    assert [c for c in calls if c[0] == "awd"] == [("awd", (2, 50))]
    assert len(calls) == 4 and out.shape == (2, 50, 400) and logits.shape == (2, 2)


def test_sentence_encoder_max_len_keeps_last_chunks(clas):
    enc = SentenceEncoder(72, clas[0].module, pad_idx=1, max_len=72)
    calls, handles = record_calls(clas)
    try:
        with torch.no_grad():
            out, mask = enc(pad_batch(docs()))
    finally:
        for h in handles:
            h.remove()
    assert len([c for c in calls if c[0] == "awd"]) == 3  # every chunk still runs (the hidden state needs it)
    assert out.shape == (4, 56, 400) and mask.shape == (4, 56)


def test_masked_concat_pool_last_max_mean():
    torch.manual_seed(0)
    x = pad_batch(docs())
    mask = x == 1
    out = torch.randn(4, 200, 3)
    pooled = masked_concat_pool(out, mask, 72)
    assert pooled.shape == (4, 9)
    for r in range(4):
        real = out[r][~mask[r]]
        torch.testing.assert_close(pooled[r], torch.cat([real[-1], real.max(0).values, real.mean(0)]))


def test_text_classifier_options():
    clf = get_text_classifier(AWD_LSTM, 100, 3, lin_ftrs=[20, 10], ps=[0.2, 0.3], drop_mult=0.5, y_range=(0, 1),
                              config={**awd_lstm_clas_config, "emb_sz": 8, "n_hid": 12})
    dims = [(b[2].in_features, b[2].out_features) for b in clf[1].layers[:3]]
    assert dims == [(24, 20), (20, 10), (10, 3)]
    assert [b[1].p for b in clf[1].layers[:3]] == pytest.approx([0.2, 0.2, 0.3])  # output_p 0.4 * 0.5 first
    assert isinstance(clf[1].layers[3], SigmoidRange)
    assert clf[0].module.rnns[0].weight_p == pytest.approx(0.25)
    assert clf[0].module.encoder_dp.embed_p == pytest.approx(0.025)
    with pytest.raises(ValueError):
        PoolingLinearClassifier([30, 10, 2], [0.1], bptt=72)


def test_classifier_splitter_groups(clas):
    assert [sum(p.numel() for p in g) for g in awd_lstm_clas_split(clas)] == [
        400_000, 7_160_832, 10_626_048, 2_486_400, 62_600]


# --------------------------------------------------------------------------------------------- language model

def test_language_model_outputs_tying_and_params(lm):
    assert isinstance(lm[1], LinearDecoder)
    assert lm[1].decoder.weight is lm[0].encoder.weight  # the same Parameter object
    assert n_params(lm) == 20_674_280
    x = torch.randint(2, 1000, (4, 72), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, raw, dropped = lm(x)
    assert logits.shape == (4, 72, 1000) and raw.shape == (4, 72, 400) and dropped.shape == (4, 72, 400)


def test_language_model_state_dict_and_splitter(lm):
    expected = {"0.encoder.weight": (1000, 400), "0.encoder_dp.emb.weight": (1000, 400)}
    expected.update(lstm_keys("0.", LSTM_SHAPES))
    expected.update({"1.decoder.weight": (1000, 400), "1.decoder.bias": (1000,)})
    sd = lm.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected and list(sd) == list(expected)
    groups = awd_lstm_lm_split(lm)
    assert len(groups) == 4
    assert [sum(p.numel() for p in g) for g in groups] == [7_160_832, 10_626_048, 2_486_400, 401_000]


def test_language_model_digest_and_calls_are_fastai_2_8_12s(lm):
    # checked against fastai 2.8.12 on a (4,72) batch
    assert keys_digest(lm) == (16, "90417a013405a4fe")
    x = torch.randint(2, 1000, (4, 72), generator=torch.Generator().manual_seed(0))
    assert calls_per_class_noeval(lm, x) == {
        "SequentialRNN": 1, "AWD_LSTM": 1, "EmbeddingDropout": 1, "RNNDropout": 4, "WeightDropout": 3, "LSTM": 3,
        "LinearDecoder": 1, "Linear": 1}


def test_language_model_config_and_drop_mult():
    assert awd_lstm_lm_config["tie_weights"] and awd_lstm_lm_config["output_p"] == 0.1
    m = get_language_model(AWD_LSTM, 50, config={**awd_lstm_lm_config, "emb_sz": 8, "n_hid": 12}, drop_mult=0.5)
    assert m[1].output_dp.p == pytest.approx(0.05)
    assert m[0].input_dp.p == pytest.approx(0.125) and m[0].encoder_dp.embed_p == pytest.approx(0.01)
    assert all(dp.p == pytest.approx(0.075) for dp in m[0].hidden_dps)
    assert all(r.weight_p == pytest.approx(0.1) for r in m[0].rnns)
    untied = get_language_model(AWD_LSTM, 50, config={**awd_lstm_lm_config, "emb_sz": 8, "n_hid": 12,
                                                       "tie_weights": False, "out_bias": False})
    assert untied[1].decoder.weight is not untied[0].encoder.weight and untied[1].decoder.bias is None


# --------------------------------------------------------------------------------------------- AWD-LSTM parts

def small_awd(**kw) -> AWD_LSTM:
    torch.manual_seed(0)
    return AWD_LSTM(30, emb_sz=6, n_hid=10, n_layers=3, **kw)


def test_hidden_state_kept_resized_and_reset():
    m = small_awd().eval()
    x = torch.randint(2, 30, (4, 5))
    with torch.no_grad():
        first = m(x)
        second = m(x)
        assert not torch.allclose(first, second)  # the hidden state carried over
        assert [tuple(h.shape) for h, _ in m.hidden] == [(1, 4, 10), (1, 4, 10), (1, 4, 6)]
        m(x[:2])  # smaller batch: hidden state cut to the first rows
        assert m.bs == 2 and [tuple(c.shape) for _, c in m.hidden] == [(1, 2, 10), (1, 2, 10), (1, 2, 6)]
        kept = m.hidden[0][0].clone()
        m._change_hidden(3)  # larger batch: zero rows appended
        assert torch.equal(m.hidden[0][0][:, :2], kept) and bool((m.hidden[0][0][:, 2] == 0).all())
        m.reset()
        assert all(bool((h == 0).all()) and h.shape[1] == 3 for h, _ in m.hidden)
        m.reset()
        m._change_hidden(4)
        torch.testing.assert_close(m(x), first)
    assert not any(h.requires_grad for pair in m.hidden for h in pair)


def test_bidirectional_awd_lstm():
    m = small_awd(bidir=True).eval()
    assert m.rnns[0].module.hidden_size == 5 and m.rnns[2].module.hidden_size == 3
    assert m(torch.randint(2, 30, (2, 7))).shape == (2, 7, 6)


def test_weight_dropout():
    lstm = nn.LSTM(4, 5, batch_first=True)
    wd = WeightDropout(lstm, 0.5)
    assert list(wd.state_dict()) == ["weight_hh_l0_raw", "module.weight_ih_l0", "module.bias_ih_l0",
                                     "module.bias_hh_l0"]
    assert not isinstance(lstm.weight_hh_l0, nn.Parameter)
    x = torch.randn(2, 3, 4)
    wd.eval()
    torch.testing.assert_close(wd(x)[0], wd(x)[0])
    wd.train()
    torch.manual_seed(0)
    seen = {}

    def grab(m, a):
        seen["w"] = m.weight_hh_l0.detach().clone()

    h = lstm.register_forward_pre_hook(grab)
    out, _ = wd(x)
    h.remove()
    zeros = seen["w"] == 0
    assert 0.3 < zeros.float().mean() < 0.7
    torch.testing.assert_close(seen["w"][~zeros], wd.weight_hh_l0_raw.detach()[~zeros] * 2)
    out.sum().backward()
    assert wd.weight_hh_l0_raw.grad is not None and bool((wd.weight_hh_l0_raw.grad[zeros] == 0).all())
    copy.deepcopy(wd)  # no non-leaf tensor left behind on the wrapped LSTM


def test_embedding_and_rnn_dropout():
    emb = nn.Embedding(20, 8, padding_idx=1)
    ed = EmbeddingDropout(emb, 0.5)
    words = torch.arange(20)[None].repeat(3, 1)
    ed.eval()
    torch.testing.assert_close(ed(words), emb(words))
    ed.train()
    torch.manual_seed(0)
    out = ed(words)
    zero_rows = (out[0] == 0).all(dim=1)
    assert bool(zero_rows.any()) and torch.equal((out[1] == 0).all(dim=1), zero_rows)  # whole words dropped
    torch.testing.assert_close(out[0][~zero_rows], emb.weight[~zero_rows] * 2)
    rd = RNNDropout(0.5).train()
    y = rd(torch.ones(2, 6, 4))
    assert torch.equal(y, y[:, :1].expand(-1, 6, -1))  # the same mask at every time step
    assert torch.equal(RNNDropout(0.5).eval()(y), y)


def test_no_module_object_twice_except_the_shared_embedding(clas, lm):
    for model, emb_names in ((clas, {"0.module.encoder", "0.module.encoder_dp.emb"}),
                             (lm, {"0.encoder", "0.encoder_dp.emb"})):
        by_id: dict[int, list[str]] = {}
        for name, mod in model.named_modules(remove_duplicate=False):
            by_id.setdefault(id(mod), []).append(name)
        repeated = [set(names) for names in by_id.values() if len(names) > 1]
        # fastai's structure: EmbeddingDropout wraps the AWD-LSTM's own embedding, registered twice
        assert repeated == [emb_names]
    relus = [m for m in clas.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 1
    two_hidden = get_text_classifier(AWD_LSTM, 50, 2, lin_ftrs=[20, 10],
                                     config={**awd_lstm_clas_config, "emb_sz": 8, "n_hid": 12})
    relus = [m for m in two_hidden.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 2 and relus[0] is not relus[1]  # fastai shares one ReLU object here


# --------------------------------------------------------------------------------------------- exhibits

def test_exhibits():
    from shapetrace.gallery.exhibits import get_exhibit

    e = get_exhibit("awd-lstm-classifier")
    m = e.build()
    assert not m.training and e.topic == "text" and n_params(m) == 20_735_880
    (x,), kwargs = e.inputs()
    assert x.shape == (4, 200) and x.dtype == torch.long and kwargs == {}
    assert int(x[x != 1].min()) >= 2 and int(x.max()) < 1000
    with torch.no_grad():
        assert m(x)[0].shape == (4, 2)
    groups = e.options["param_groups"]
    sizes = []
    for names in groups.values():
        params = {id(p): p for name in names for p in m.get_submodule(name).parameters()}  # shared weight once
        sizes.append(sum(p.numel() for p in params.values()))
    assert sizes == [400_000, 7_160_832, 10_626_048, 2_486_400, 62_600]
    lm_ex = get_exhibit("awd-lstm-language-model")
    lm_model = lm_ex.build()
    (x,), _ = lm_ex.inputs()
    assert x.shape == (4, 72) and not lm_model.training
    with torch.no_grad():
        assert [tuple(t.shape) for t in lm_model(x)] == [(4, 72, 1000), (4, 72, 400), (4, 72, 400)]
    assert len(lm_ex.options["param_groups"]) == 4
    for names in lm_ex.options["param_groups"].values():
        for name in names:
            lm_model.get_submodule(name)


def test_trace_shows_the_three_chunk_calls(shared_exhibits):
    import shapetrace

    if not hasattr(shapetrace, "trace"):
        pytest.skip("shapetrace.trace is not available yet")

    t = shared_exhibits.trace("awd-lstm-classifier")  # shapetrace.trace(e.build(), *args, **kwargs)
    awd = [c for c in t.calls if c.module == "0.module"]
    assert [c.cls for c in awd] == ["AWD_LSTM"] * 3
    assert [c.call_index for c in awd] == [0, 1, 2]
    assert [tuple(c.inputs[0].shape) for c in awd] == [(2, 72), (4, 72), (3, 56)]
    for i in range(3):
        lstm = [c for c in t.calls if c.module == f"0.module.rnns.{i}.module"]
        assert [c.cls for c in lstm] == ["LSTM"] * 3
        assert [tuple(c.inputs[0].shape)[:2] for c in lstm] == [(2, 72), (4, 72), (3, 56)]
