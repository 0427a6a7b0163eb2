"""A text table narrowed to a width cuts layer names, but never so that two different layers read the same, and a
wide cell in another column wraps before the names are cut short for it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import shapetrace
from shapetrace.renderers import table
from shapetrace.renderers.units import display_width


class RMSNorm(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class Attention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d, bias=False) for _ in range(4))

    def forward(self, hidden_states, attention_mask=None, position_ids=None, use_cache=True):
        q, k, v = self.q_proj(hidden_states), self.k_proj(hidden_states), self.v_proj(hidden_states)
        return self.o_proj(torch.softmax(q @ k.transpose(-1, -2), -1) @ v), None


class MLP(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(d, 2 * d, bias=False), nn.Linear(d, 2 * d, bias=False)
        self.down_proj = nn.Linear(2 * d, d, bias=False)
        self.act_fn = nn.SiLU()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(d)
        self.self_attn = Attention(d)
        self.post_attention_layernorm = RMSNorm(d)
        self.mlp = MLP(d)

    def forward(self, x, attention_mask=None, position_ids=None, use_cache=True):
        a, _ = self.self_attn(hidden_states=self.input_layernorm(x), attention_mask=attention_mask,
                              position_ids=position_ids, use_cache=use_cache)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x))


@dataclass
class BaseModelOutputWithPast:
    last_hidden_state: torch.Tensor
    hidden_states: tuple


class Decoder(nn.Module):
    def __init__(self, d: int, vocab: int) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList([DecoderLayer(d)])
        self.norm = RMSNorm(d)

    def forward(self, input_ids, attention_mask=None, position_ids=None, inputs_embeds=None, use_cache=None):
        x = self.embed_tokens(input_ids)
        positions = torch.arange(input_ids.shape[1])[None]
        for layer in self.layers:
            x = layer(x, attention_mask=None, position_ids=positions, use_cache=True)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(x), hidden_states=(x,))


class CausalLM(nn.Module):
    """A one-layer Llama-shaped decoder, torch only, with Hugging Face's module names."""

    def __init__(self, d: int = 32, vocab: int = 128) -> None:
        super().__init__()
        self.model = Decoder(d, vocab)
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, input_ids, attention_mask=None):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=None, inputs_embeds=None,
                         use_cache=None)
        return BaseModelOutputWithPast(last_hidden_state=self.lm_head(out.last_hidden_state), hidden_states=())


@pytest.fixture(scope="module")
def llama_like():
    torch.manual_seed(0)
    return shapetrace.trace(CausalLM().eval(), input_ids=torch.randint(0, 100, (1, 7)),
                            attention_mask=torch.ones(1, 7, dtype=torch.long))


def layer_labels(text: str) -> list[str]:
    """The layer cell of every row (its first line), read up to where the header's class column starts."""
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("layer"))
    start = header.index("class")
    rows = lines[lines.index(header) + 2:]
    rows = rows[:next(i for i, line in enumerate(rows) if line.startswith("─"))]
    return [line[:start].strip() for line in rows if line[:start].strip() and not line[start:].startswith(" ")
            and not line.lstrip().startswith("in: ")]


@pytest.mark.parametrize("width", [60, 80, 100, 120])
def test_sibling_layers_never_read_the_same_when_names_are_cut(llama_like, width):
    text = str(llama_like.table(width=width))
    assert all(len(line) <= width for line in text.splitlines())
    labels = layer_labels(text)
    assert len(labels) == len(llama_like.calls)  # every module is called once: every label must differ
    assert len(set(labels)) == len(labels), labels


def test_at_the_default_width_the_norms_keep_what_tells_them_apart_and_the_wide_output_cell_wraps(llama_like):
    labels = layer_labels(str(llama_like.table(width=100)))
    norms = [label for label in labels if "norm" in label]
    assert norms[0] == "input_layernorm"
    assert norms[1].startswith("post_") and norms[1].endswith("_layernorm")
    assert norms[2] == "norm"


def test_distinct_cuts_keeps_the_part_that_tells_two_names_apart():
    cut = table.distinct_cuts(["  input_layernorm", "  post_attention_layernorm", "  mlp"], 10)
    assert len(set(cut)) == 3 and cut[2] == "  mlp"
    assert all(len(c) <= 10 for c in cut)
    dotted = table.distinct_cuts(["model.layers.0.input_layernorm", "model.layers.1.input_layernorm"], 24)
    assert len(set(dotted)) == 2 and all(len(c) <= 24 for c in dotted)


class Dense(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(8, 8)

    def forward(self, x):
        return self.dense(x)


class Attends(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.output = Dense()

    def forward(self, x):
        return self.output(x)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = Attends()

    def forward(self, x):
        return self.attention(x)


class FiftyBlocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block() for _ in range(50))

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def test_fifty_deep_names_differing_only_in_their_index_keep_the_index_at_width_40():
    text = table.render_text(shapetrace.trace(FiftyBlocks(), torch.randn(2, 8)), view="modules", width=40)
    lines = text.splitlines()
    assert max(map(display_width, lines)) <= 40
    names = [line.split()[0] for line in lines if " Linear " in line]
    assert len(names) == 50 and len(set(names)) == 50
    assert all(f"…{i}…" in name for i, name in enumerate(names))  # blocks.N: the part that differs


@dataclass
class EncoderOutputWithPoolingAndCrossAttentions:
    """A forward's output as Hugging Face models return them: a long type name, long field names."""
    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor


class Intermediate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(32, 64)

    def forward(self, x):
        return self.dense(x)


class EncoderLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.intermediate = Intermediate()
        self.output_projection = nn.Linear(64, 32)

    def forward(self, x):
        return self.output_projection(self.intermediate(x))


class StructOutputEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.token_type_embeddings = nn.Linear(32, 32)
        self.layer = nn.ModuleList([EncoderLayer(), EncoderLayer()])

    def forward(self, x):
        x = self.token_type_embeddings(x)
        for block in self.layer:
            x = block(x)
        return EncoderOutputWithPoolingAndCrossAttentions(last_hidden_state=x, pooler_output=x[:, 0])


@pytest.fixture(scope="module")
def struct_output_trace():
    return shapetrace.trace(StructOutputEncoder(), torch.randn(2, 16, 32))


def test_a_long_struct_output_wraps_at_its_fields_and_the_layer_names_stay_whole(struct_output_trace):
    text = str(struct_output_trace.table(width=100))
    for name in ("token_type_embeddings", "intermediate", "output_projection", "StructOutputEncoder"):
        assert name in text
    assert "last_hidden_state=(2,16,32)," in text  # a field's name and its shape on one line
    assert all(display_width(line) <= 100 for line in text.splitlines())


def test_a_long_struct_output_is_wrapped_between_words_never_inside_a_field_name_or_a_shape(struct_output_trace):
    text = str(struct_output_trace.table(width=60))
    lines = text.splitlines()
    assert all(display_width(line) <= 60 for line in lines)
    joined = " ".join(line.strip() for line in lines)
    for piece in ("last_hidden_state=", "pooler_output=", "(2,16,32)", "(2,32)"):
        assert piece in joined
    assert "last_hidden_sta" not in joined.replace("last_hidden_state", "")


def test_a_cell_wraps_after_a_struct_s_paren_an_equals_and_a_comma_never_inside_a_shape():
    text = "EncoderOutput(last_hidden_state=(2,16,32),pooler_output=(2,32))"
    assert table.wrap_cell(text, 20) == ["EncoderOutput(", "last_hidden_state=", "(2,16,32),",
                                         "pooler_output=", "(2,32))"]
    assert table.wrap_cell(text, 30) == ["EncoderOutput(", "last_hidden_state=(2,16,32),",
                                         "pooler_output=(2,32))"]


def test_a_struct_s_type_name_wider_than_the_column_breaks_between_its_words():
    assert table.wrap_cell("EncoderOutputWithPoolingAndCrossAttentions(x=(2,3))", 24) == [
        "EncoderOutputWithPooling", "AndCrossAttentions(", "x=(2,3))"]


@pytest.mark.parametrize("width", [40, 50, 60])
def test_cut_layer_names_keep_their_indentation(struct_output_trace, width):
    text = str(struct_output_trace.table(width=width, depth=3))
    rows = [line for line in text.splitlines() if line.rstrip()[-1:].isdigit() and "in:" not in line
            and not line.startswith(" " * 8) and ":" not in line]
    depths = [len(line) - len(line.lstrip(" ")) for line in rows]
    assert depths == [0, 2, 2, 4, 6, 4, 2, 4, 6, 4], text
