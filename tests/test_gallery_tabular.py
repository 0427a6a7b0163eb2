"""The tabular gallery model against fastai 2.8.12's numbers (../shared/facts/chapter15-fastai-2.8.md).

fastai is never imported: its numbers are recorded here as facts. The state_dict keys below were derived from
fastai 2.8's module structure (``TabularModel`` registers ``embeds`` (ModuleList of ``Embedding``),
``emb_drop``, ``bn_cont``, then ``layers`` (Sequential of ``LinBnDrop``, itself a Sequential); with
``lin_first=True`` a hidden ``LinBnDrop`` holds [Linear(bias=False), ReLU, BatchNorm1d] (+ Dropout when p > 0),
and the last holds [Linear(bias=True)]), then checked against real fastai 2.8.12 (torch 2.14.1, in a scratch
environment outside this repository): identical keys, order, shapes, parameter counts, calls and outputs.
"""

from __future__ import annotations

import pytest
import torch
from conftest import require
from torch import nn

from shapetrace.gallery.layers import LinBnDrop, SigmoidRange
from shapetrace.gallery.tabular import TabularModel, emb_sz_rule, get_emb_sz

CARDS = [10, 7, 16, 3, 100]


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def facts_model(**kwargs) -> TabularModel:
    return TabularModel(get_emb_sz(CARDS), kwargs.pop("n_cont", 6), 2, [200, 100], **kwargs)


def inputs(bs: int = 8, n_cont: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x_cat = torch.stack([torch.randint(0, n, (bs,), generator=g) for n in CARDS], dim=1)
    return x_cat, torch.randn(bs, n_cont, generator=g)


# --------------------------------------------------------------------------------------------- the rule

@pytest.mark.parametrize(("n", "width"), [(2, 2), (10, 6), (100, 21), (1000, 77), (10000, 278), (100000, 600)])
def test_emb_sz_rule_table(n, width):
    assert emb_sz_rule(n) == width


def test_emb_sz_rule_caps_at_600():
    assert emb_sz_rule(10**7) == 600


def test_get_emb_sz_from_list_dict_and_overrides():
    assert get_emb_sz(CARDS) == [(10, 6), (7, 5), (16, 8), (3, 3), (100, 21)]
    named = {"workclass": 10, "race": 7, "occupation": 16, "sex": 3, "zip": 100}
    assert get_emb_sz(named) == get_emb_sz(CARDS)
    assert get_emb_sz(named, sz_dict={"zip": 10}) == [(10, 6), (7, 5), (16, 8), (3, 3), (100, 10)]
    assert get_emb_sz(CARDS, sz_dict={4: 10})[4] == (100, 10)


# --------------------------------------------------------------------------------------------- the model

def test_facts_config_params_and_sizes():
    m = facts_model()
    assert [(e.num_embeddings, e.embedding_dim) for e in m.embeds] == [(10, 6), (7, 5), (16, 8), (3, 3), (100, 21)]
    assert m.n_emb == 43
    linears = [mod for mod in m.layers.modules() if isinstance(mod, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(49, 200), (200, 100), (100, 2)]
    assert n_params(m) == 32_946
    assert n_params(facts_model(n_cont=0)) == 31_734


def test_layer_order_is_lin_first():
    m = facts_model()
    assert len(m.layers) == 3 and all(isinstance(b, LinBnDrop) for b in m.layers)
    for block, width in zip(m.layers[:2], (200, 100)):
        assert [type(c) for c in block] == [nn.Linear, nn.ReLU, nn.BatchNorm1d]
        assert block[0].bias is None and block[2].num_features == width
    assert [type(c) for c in m.layers[2]] == [nn.Linear]
    assert m.layers[2][0].bias is not None


def test_dropout_bn_final_y_range_and_book_order():
    m = facts_model(ps=[0.1, 0.2], embed_p=0.3, bn_final=True, y_range=(0, 5))
    assert [type(c) for c in m.layers[0]] == [nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Dropout]
    assert m.layers[1][3].p == 0.2 and m.emb_drop.p == 0.3
    assert [type(c) for c in m.layers[2]] == [nn.Linear, nn.BatchNorm1d]  # bn_final: no bias on that Linear
    assert isinstance(m.layers[3], SigmoidRange)
    out = m.eval()(*inputs())
    assert out.shape == (8, 2) and bool(((out > 0) & (out < 5)).all())
    # the book's printouts predate lin_first=True: BatchNorm1d -> Dropout -> Linear -> ReLU
    book = facts_model(ps=0.1, lin_first=False)
    assert [type(c) for c in book.layers[0]] == [nn.BatchNorm1d, nn.Dropout, nn.Linear, nn.ReLU]
    assert book.layers[0][0].num_features == 49
    assert n_params(facts_model(use_bn=False)) == 2332 + 12 + 49 * 200 + 200 + 200 * 100 + 100 + 202


def test_forward_shapes_and_column_order():
    m = facts_model().eval()
    x_cat, x_cont = inputs()
    assert m(x_cat, x_cont).shape == (8, 2)
    # the first Linear sees [embeddings in column order, batch-normalised continuous columns]
    seen = {}

    def grab(mod, args, out):
        seen["x"] = args[0]

    handle = m.layers[0][0].register_forward_hook(grab)
    m(x_cat, x_cont)
    handle.remove()
    expected = torch.cat([e(x_cat[:, i]) for i, e in enumerate(m.embeds)] + [m.bn_cont(x_cont)], 1)
    torch.testing.assert_close(seen["x"], expected)
    # continuous only, and categorical only
    cont_only = TabularModel([], 6, 2, [200, 100]).eval()
    assert cont_only(torch.empty(8, 0, dtype=torch.long), x_cont).shape == (8, 2)
    assert facts_model(n_cont=0).eval()(x_cat).shape == (8, 2)


def test_state_dict_keys_match_fastai():
    # derived from fastai 2.8's TabularModel structure (see the module docstring) and checked against fastai
    # 2.8.12: its state_dict for this configuration has exactly these keys, in this order, with these shapes
    expected = {
        "embeds.0.weight": (10, 6), "embeds.1.weight": (7, 5), "embeds.2.weight": (16, 8),
        "embeds.3.weight": (3, 3), "embeds.4.weight": (100, 21),
        "bn_cont.weight": (6,), "bn_cont.bias": (6,), "bn_cont.running_mean": (6,), "bn_cont.running_var": (6,),
        "bn_cont.num_batches_tracked": (),
        "layers.0.0.weight": (200, 49),
        "layers.0.2.weight": (200,), "layers.0.2.bias": (200,), "layers.0.2.running_mean": (200,),
        "layers.0.2.running_var": (200,), "layers.0.2.num_batches_tracked": (),
        "layers.1.0.weight": (100, 200),
        "layers.1.2.weight": (100,), "layers.1.2.bias": (100,), "layers.1.2.running_mean": (100,),
        "layers.1.2.running_var": (100,), "layers.1.2.num_batches_tracked": (),
        "layers.2.0.weight": (2, 100), "layers.2.0.bias": (2,),
    }
    sd = facts_model().state_dict()
    assert list(sd) == list(expected)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    facts_model().load_state_dict(sd, strict=True)


def test_n_cont_0_keeps_an_empty_bn_cont_like_fastai():
    # checked against fastai 2.8.12: with n_cont=0 (and bn_cont=True) fastai still registers BatchNorm1d(0), so its
    # state_dict has bn_cont.* entries of shape (0,) between the embeddings and the layers
    sd = facts_model(n_cont=0).state_dict()
    assert list(sd)[5:10] == ["bn_cont.weight", "bn_cont.bias", "bn_cont.running_mean", "bn_cont.running_var",
                              "bn_cont.num_batches_tracked"]
    assert tuple(sd["bn_cont.weight"].shape) == (0,) and tuple(sd["layers.0.0.weight"].shape) == (200, 43)


def test_each_block_owns_its_activation():
    act = nn.ReLU(inplace=True)
    for m in (facts_model(), facts_model(act_cls=act), TabularModel(get_emb_sz(CARDS), 6, 2, [200, 100, 50])):
        mods = [id(mod) for _, mod in m.named_modules(remove_duplicate=False)]
        assert len(mods) == len(set(mods)), "a module object appears twice"
        assert all(mod is not act for mod in m.modules())
    relus = [mod for mod in facts_model().modules() if isinstance(mod, nn.ReLU)]
    assert len(relus) == 2 and relus[0] is not relus[1] and relus[0].inplace
    # a class works too, and None means no activation
    assert isinstance(facts_model(act_cls=nn.GELU).layers[0][1], nn.GELU)
    assert [type(c) for c in facts_model(act_cls=None).layers[0]] == [nn.Linear, nn.BatchNorm1d]


def test_torchinfo_counts_a_shared_relu_module_twice():
    """Why our layers own their activation, and where the issue's 26,805 vs 26,405 comes from.

    fastai's default ``act_cls`` is one ``nn.ReLU`` object given to every hidden block. torchinfo 1.8 then
    mis-attributes the parameters around the shared module and counts the BatchNorm1d of the first hidden
    block of ``layers=[200, 100]`` twice: +400 on any such TabularModel. The issue's 26,405 is the true count
    of a ``layers=[200, 100]``, 2-output model whose embeddings and continuous columns satisfy
    E + 2*n_cont + 200*(n_emb + n_cont) = 5,603 (E: embedding parameters); the arithmetic alone does not
    say which one was measured. One example: cardinalities [13, 16, 20] (widths 7, 8, 9) and 2 continuous.
    """
    torchinfo = require("torchinfo")

    def fastai_style(cards, n_cont):
        m = TabularModel(get_emb_sz(cards), n_cont, 2, [200, 100])
        shared = nn.ReLU(inplace=True)
        for block in m.layers[:-1]:
            block[1] = shared
        return m

    def count(m, cards, n_cont):
        x_cat = torch.stack([torch.randint(0, n, (8,)) for n in cards], dim=1)
        stats = torchinfo.summary(m, input_data=[x_cat, torch.randn(8, n_cont)], verbose=0)
        return stats.total_params

    cards = [13, 16, 20]
    m = fastai_style(cards, 2)
    assert n_params(m) == 26_405
    assert count(m, cards, 2) == 26_805
    ours = TabularModel(get_emb_sz(cards), 2, 2, [200, 100])
    assert count(ours, cards, 2) == n_params(ours) == 26_405
    assert count(fastai_style(CARDS, 6), CARDS, 6) == 32_946 + 400


def test_exhibits():
    from shapetrace.gallery.exhibits import get_exhibit

    e = get_exhibit("tabular-model")
    m = e.build()
    assert not m.training and n_params(m) == 32_946 and e.topic == "tabular"
    args, kwargs = e.inputs()
    x_cat, x_cont = args
    assert x_cat.shape == (8, 5) and x_cat.dtype == torch.long and x_cont.shape == (8, 6)
    assert all(int(x_cat[:, i].max()) < n for i, n in enumerate(CARDS))
    assert m(*args, **kwargs).shape == (8, 2)
    rule = get_exhibit("emb-sz-rule")
    for pair in ("2\u21922", "10\u21926", "100\u219221", "1,000\u219277", "10,000\u2192278", "100,000\u2192600"):
        assert pair in rule.caption
    rm = rule.build()
    assert [e.embedding_dim for e in rm.embeds] == [2, 6, 21, 77, 278]
    args, kwargs = rule.inputs()
    assert rm(*args, **kwargs).shape == (8, 1)
    for ex in (e, rule):
        for names in ex.options["param_groups"].values():
            for name in names:
                ex.build().get_submodule(name)
