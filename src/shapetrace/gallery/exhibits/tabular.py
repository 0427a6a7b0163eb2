"""Gallery exhibits for chapter 15's tabular model: ``TabularModel`` and the embedding-size rule."""

from __future__ import annotations

import torch

from ..tabular import TabularModel, emb_sz_rule, get_emb_sz
from .registry import Exhibit, register

# The facts' configuration: five categorical columns (cardinalities counting fastai's #na# category),
# six continuous columns, two hidden layers, two outputs.
CARDINALITIES = [10, 7, 16, 3, 100]
N_CONT = 6
BATCH = 8
# Cardinalities for the rule exhibit (100,000 -> 600 is left out of the model: 60M parameters to show a cap).
RULE_CARDINALITIES = [2, 10, 100, 1000, 10000]


def _tabular_model() -> TabularModel:
    return TabularModel(get_emb_sz(CARDINALITIES), N_CONT, 2, [200, 100]).eval()


def _tabular_inputs() -> tuple[tuple, dict]:
    g = torch.Generator().manual_seed(0)
    x_cat = torch.stack([torch.randint(0, n, (BATCH,), generator=g) for n in CARDINALITIES], dim=1)
    x_cont = torch.randn(BATCH, N_CONT, generator=g)
    return (x_cat, x_cont), {}


def _rule_model() -> TabularModel:
    return TabularModel(get_emb_sz(RULE_CARDINALITIES), 0, 1, []).eval()


def _rule_inputs() -> tuple[tuple, dict]:
    g = torch.Generator().manual_seed(0)
    x_cat = torch.stack([torch.randint(0, n, (BATCH,), generator=g) for n in RULE_CARDINALITIES], dim=1)
    return (x_cat,), {}


def _rule_table(cards: list[int]) -> str:
    return ", ".join(f"{n:,}\u2192{emb_sz_rule(n)}" for n in cards)


register(Exhibit(
    name="tabular-model",
    question='What does TabularModel do with categorical and continuous columns?',
    title="TabularModel: embeddings sized by the rule, then LinBnDrop blocks",
    caption=(
        "Five categorical columns with cardinalities 10, 7, 16, 3 and 100 (counting the #na# category fastai "
        "adds to each) get embeddings of width 6, 5, 8, 3 and 21; their 43 values are concatenated, passed "
        "through embedding dropout and joined by the 6 batch-normalised continuous columns: 49 inputs, then "
        "200, 100 and 2 outputs, 32,946 parameters. fastai 2.8 builds its blocks with lin_first=True, so "
        "each hidden block runs Linear, ReLU, BatchNorm1d (then Dropout when p > 0); the chapter says only that "
        "each block includes batchnorm and dropout. The final block is a single Linear with a bias. fastai passes one "
        "shared ReLU object to every block; here each block owns its own, which changes no weights."
    ),
    build=_tabular_model,
    inputs=_tabular_inputs,
    topic="tabular",
    options={"overlays": ["groups"], "param_groups": {"embeddings": ["embeds"], "continuous": ["bn_cont"], "layers": ["layers"]}},
))

register(Exhibit(
    name="emb-sz-rule",
    question='How wide does fastai make each categorical embedding?',
    title="The embedding-size rule of thumb",
    caption=(
        "fastai sizes each categorical embedding with min(600, round(1.6 \u00b7 n^0.56)) for a column of "
        f"cardinality n: {_rule_table([2, 10, 100, 1000, 10000, 100000])}. Width grows a little faster than "
        "the square root of the cardinality and is capped at 600. The model shown embeds five columns of "
        f"cardinality {', '.join(f'{n:,}' for n in RULE_CARDINALITIES)} (widths "
        f"{', '.join(str(emb_sz_rule(n)) for n in RULE_CARDINALITIES)}) with no hidden layer, so the trace is "
        "just the embeddings, their 384-wide concatenation and one Linear."
    ),
    build=_rule_model,
    inputs=_rule_inputs,
    topic="tabular",
    options={"overlays": ["groups"], "param_groups": {"embeddings": ["embeds"], "layers": ["layers"]}},
))
