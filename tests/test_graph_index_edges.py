"""An edge into a reader through a folded indexing op carries what each drawn node supplied: the data the
reader receives from the node that made it, and from a node that only supplied the index (a packed sequence's
``unsorted_indices`` reordering the padded output), that index with its own shape and dtype. An edge carrying
tensors of several dtypes names each one's."""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import shapetrace
from shapetrace.renderers.diagram import to_dot
from shapetrace.renderers.graph import build_graph


class Packed(nn.Module):
    """Embedding, packed LSTM then GRU, unpacked, a linear head: ``pad_packed_sequence`` reorders its padded
    output with the packed sequence's ``unsorted_indices`` (an ``index_select``)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.lstm = nn.LSTM(8, 6, batch_first=True)
        self.gru = nn.GRU(6, 5, batch_first=True)
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        p = pack_padded_sequence(self.emb(x), lengths, batch_first=True, enforce_sorted=False)
        o, _ = self.gru(self.lstm(p)[0])
        return self.fc(pad_packed_sequence(o, batch_first=True)[0])


class TwoDtypes(nn.Module):
    """A layer whose output and its row-wise argmax (an int64 index) go together to one reader."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        return torch.add(y, y.argmax(1, keepdim=True))


def _packed():
    torch.manual_seed(0)
    model = Packed().eval()
    x, lengths = torch.randint(0, 20, (4, 7)), torch.tensor([7, 3, 5, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = shapetrace.trace(model, x, lengths, ops=True)
        packed = model.gru(model.lstm(pack_padded_sequence(model.emb(x), lengths, True, enforce_sorted=False))[0])[0]
    return t, packed


def test_a_node_that_supplied_only_an_index_feeds_the_reader_that_index():
    t, packed = _packed()
    g = build_graph(t)
    names = {n.id: n.name for n in g.nodes}
    into_fc = {names[e.src]: e for e in g.edges if names.get(e.dst) == "fc"}
    index = packed.unsorted_indices  # torch's own: what the GRU's packed output adds to the reordering
    gru = into_fc["gru"]
    assert (gru.shapes, gru.dtype_of(0), gru.index_into) == ([tuple(index.shape)], str(index.dtype)[6:], ["index_select"])
    data = into_fc["_pad_packed_sequence"]
    assert (data.shapes, data.dtype_of(0), data.index_into) == ([(4, 7, 5)], "float32", [])
    assert "gru → fc: (4) int64 (the index into index_select, not the data it picked)" in to_dot(t)


def test_an_edge_carrying_tensors_of_two_dtypes_names_each_ones_dtype():
    t = shapetrace.trace(TwoDtypes(), torch.randn(2, 4), ops=True)
    g = build_graph(t, all_ops=True)
    names = {n.id: n.name for n in g.nodes}
    (edge,) = [e for e in g.edges if names.get(e.src) == "lin" and names.get(e.dst) == "argmax"]
    assert edge.dtype_of(0) == "float32"
    (edge,) = [e for e in g.edges if names.get(e.src) == "argmax"]
    assert (edge.shapes, edge.dtype_of(0)) == ([(2, 1)], "int64")
    g = build_graph(t)  # argmax folded: lin feeds add its output and the index computed from it
    names = {n.id: n.name for n in g.nodes}
    (edge,) = [e for e in g.edges if names.get(e.src) == "lin"]
    assert [(s, edge.dtype_of(k)) for k, s in enumerate(edge.shapes)] == [((2, 3), "float32"), ((2, 1), "int64")]
    assert "lin → add: (2, 3) float32, (2, 1) int64" in to_dot(t)


def test_an_edge_carrying_data_beside_an_index_marks_only_the_index() -> None:
    class Pair(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.cat([a, b], -1)

    class DataAndIndex(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.n, self.m, self.d = nn.Linear(4, 4), nn.Linear(4, 4), Pair()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y, z = self.n(x), self.m(x)
            return self.d(y, z[y.argmax(-1)])  # n gives d its output y, and the index that picks rows of z

    dot = to_dot(shapetrace.trace(DataAndIndex().eval(), torch.randn(3, 4), ops=True))
    (tooltip,) = [line for line in dot.splitlines() if 'tooltip="n → d:' in line]
    assert "(3, 4) float32, (3) int64 index" in tooltip
    assert "(3, 4) float32 index" not in tooltip
