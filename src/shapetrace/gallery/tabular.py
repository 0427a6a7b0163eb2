"""fastai 2.8's tabular model in plain PyTorch: the embedding-size rule and ``TabularModel``.

A tabular model embeds every categorical column, concatenates the embeddings (with dropout), appends the
batch-normalised continuous columns and sends the result through a stack of ``LinBnDrop`` blocks. Module
names, order and shapes follow fastai 2.8, so a fastai ``TabularModel`` state_dict loads into ours with
``strict=True``. One deliberate difference: fastai hands the same ``nn.ReLU`` object to every block (its
default ``act_cls`` is a module instance); here each block owns its own copy. No parameters are involved,
so state_dicts are unaffected, but a module-level trace shows each block's activation on its own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from .layers import LinBnDrop, SigmoidRange

__all__ = ["TabularModel", "emb_sz_rule", "get_emb_sz"]

Activation = nn.Module | Callable[[], nn.Module] | None

# fastai's default activation; every block gets its own deep copy, so this instance is never in a model
_DEFAULT_ACT = nn.ReLU(inplace=True)


def emb_sz_rule(n_cat: int) -> int:
    """Embedding width for a categorical column of cardinality ``n_cat``: ``min(600, round(1.6 * n_cat**0.56))``."""
    return min(600, round(1.6 * n_cat ** 0.56))


def get_emb_sz(cardinalities: Sequence[int] | Mapping[str, int],
               sz_dict: Mapping[str | int, int] | None = None) -> list[tuple[int, int]]:
    """``(num_embeddings, embedding_dim)`` for each categorical column, ready for ``TabularModel``.

    ``cardinalities`` is a list of cardinalities, or a dict mapping column name to cardinality (in column
    order). A cardinality here counts categories the way fastai's ``Categorify`` does, i.e. *including* the
    ``#na#`` category it adds to every column: a column with 9 distinct values has cardinality 10. fastai's
    own ``get_emb_sz`` reads the same numbers off ``len(to.classes[name])`` of a ``TabularPandas``.

    ``sz_dict`` overrides the rule for some columns: keys are column names for a dict, positions for a list.
    """
    overrides = dict(sz_dict or {})
    keyed = list(cardinalities.items()) if isinstance(cardinalities, Mapping) else list(enumerate(cardinalities))
    return [(int(n), int(overrides.get(key, emb_sz_rule(int(n))))) for key, n in keyed]


def _embedding(ni: int, nf: int, std: float = 0.01) -> nn.Embedding:
    """An ``nn.Embedding`` initialised like fastai's ``Embedding``: truncated normal, std 0.01, within 2 std."""
    emb = nn.Embedding(ni, nf)
    with torch.no_grad():
        nn.init.trunc_normal_(emb.weight, std=std, a=-2 * std, b=2 * std)
    return emb


def _own_activation(act: Activation) -> nn.Module | None:
    """A fresh activation module: a copy of a given instance, a new one from a class or factory, or None."""
    if act is None:
        return None
    if isinstance(act, nn.Module):
        return copy.deepcopy(act)
    return act()


class TabularModel(nn.Module):
    """fastai 2.8's ``TabularModel``: embeddings + continuous columns -> ``LinBnDrop`` blocks -> ``out_sz``.

    ``emb_szs`` is a list of ``(cardinality, width)`` pairs (see :func:`get_emb_sz`); ``layers`` the hidden
    sizes; ``ps`` one dropout per hidden block (a single float applies to all). With ``lin_first=True``
    (fastai 2.8's default; the book's printouts predate it) each hidden block is Linear -> activation ->
    BatchNorm1d -> Dropout, and the final block is a Linear with a bias (plus BatchNorm1d when
    ``bn_final``). ``act_cls`` may be a module instance (copied for every block), a class or ``None``.
    """

    def __init__(self, emb_szs: Sequence[tuple[int, int]], n_cont: int, out_sz: int, layers: Sequence[int],
                 ps: float | Sequence[float] | None = None, embed_p: float = 0.0,
                 y_range: tuple[float, float] | None = None, use_bn: bool = True, bn_final: bool = False,
                 bn_cont: bool = True, act_cls: Activation = _DEFAULT_ACT, lin_first: bool = True) -> None:
        super().__init__()
        layers = list(layers)
        if ps is None:
            ps = [0.0] * len(layers)
        elif not isinstance(ps, (list, tuple)):
            ps = [ps] * len(layers)
        ps = list(ps)
        self.embeds = nn.ModuleList([_embedding(ni, nf) for ni, nf in emb_szs])
        self.emb_drop = nn.Dropout(embed_p)
        self.bn_cont = nn.BatchNorm1d(n_cont) if bn_cont else None
        self.n_emb = sum(e.embedding_dim for e in self.embeds)
        self.n_cont = n_cont
        sizes = [self.n_emb + n_cont] + layers + [out_sz]
        n_blocks = len(sizes) - 1
        blocks: list[nn.Module] = []
        for i, p in zip(range(n_blocks), ps + [0.0]):  # like fastai, a short ``ps`` truncates the stack
            last = i == n_blocks - 1
            blocks.append(LinBnDrop(sizes[i], sizes[i + 1], bn=use_bn and (not last or bn_final), p=p,
                                    act=None if last else _own_activation(act_cls), lin_first=lin_first))
        if y_range is not None:
            blocks.append(SigmoidRange(*y_range))
        self.layers = nn.Sequential(*blocks)

    def forward(self, x_cat: torch.Tensor, x_cont: torch.Tensor | None = None) -> torch.Tensor:
        if self.n_emb != 0:
            x = torch.cat([e(x_cat[:, i]) for i, e in enumerate(self.embeds)], 1)
            x = self.emb_drop(x)
        if self.n_cont != 0:
            if self.bn_cont is not None:
                x_cont = self.bn_cont(x_cont)
            x = torch.cat([x, x_cont], 1) if self.n_emb != 0 else x_cont
        return self.layers(x)
