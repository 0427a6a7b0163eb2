"""fastai 2.8's text models in plain PyTorch: AWD-LSTM, its language model and its BPT3C classifier.

* ``AWD_LSTM``: an embedding (with embedding dropout) feeding a stack of single-layer LSTMs whose
  hidden-to-hidden weights get DropConnect (``WeightDropout``), with variational dropout (``RNNDropout``)
  between them. The hidden state is kept between calls, detached, and grown or shrunk when the batch size
  changes.
* ``get_language_model``: ``AWD_LSTM`` + ``LinearDecoder`` whose weight is tied to the embedding.
* ``get_text_classifier``: ``SentenceEncoder`` (BPT3C: the document is fed to the AWD-LSTM one ``bptt``
  chunk at a time, only rows that have started are run, outputs are padded back) + ``PoolingLinearClassifier``
  (concat pooling of the last, max and mean outputs, then ``LinBnDrop`` blocks).
* ``pad_batch``: pads documents the way fastai's classification dataloader (``pad_input_chunk``) does.

Module names and registration order follow fastai 2.8, so the state_dict keys and shapes are fastai's
(``0.module.rnns.0.weight_hh_l0_raw``, ``0.module.rnns.0.module.weight_ih_l0``, ...). Unlike fastai, no
activation object is shared between the head's blocks.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import LinBnDrop, SigmoidRange

__all__ = [
    "AWD_LSTM",
    "EmbeddingDropout",
    "LinearDecoder",
    "PoolingLinearClassifier",
    "RNNDropout",
    "SentenceEncoder",
    "SequentialRNN",
    "WeightDropout",
    "awd_lstm_clas_config",
    "awd_lstm_clas_groups",
    "awd_lstm_clas_split",
    "awd_lstm_lm_config",
    "awd_lstm_lm_groups",
    "awd_lstm_lm_split",
    "dropout_mask",
    "get_language_model",
    "get_text_classifier",
    "masked_concat_pool",
    "pad_batch",
]


# --------------------------------------------------------------------------------------------- dropouts

def dropout_mask(x: torch.Tensor, sz: Sequence[int], p: float) -> torch.Tensor:
    """A Bernoulli keep-mask like ``x`` (dtype, device) of shape ``sz``, scaled by ``1/(1-p)``."""
    return x.new_empty(*sz).bernoulli_(1 - p).div_(1 - p)


class RNNDropout(nn.Module):
    """Variational dropout: one mask per sequence, the same at every time step of a ``(bs, seq, ...)`` input."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * dropout_mask(x.data, (x.size(0), 1, *x.shape[2:]), self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _no_flatten() -> None:
    """Stands in for ``RNNBase.flatten_parameters`` on a wrapped RNN, whose weights cannot be flattened."""


class WeightDropout(nn.Module):
    """DropConnect on some weights of ``module`` (by default an LSTM's ``weight_hh_l0``).

    For each name in ``layer_names`` the wrapper owns the trainable tensor as ``<name>_raw``; the wrapped
    module's own parameter of that name is removed, and before every forward it receives a plain tensor:
    ``dropout(<name>_raw, weight_p)`` in training, a copy of the raw weight in eval. Hence the state_dict
    keys ``weight_hh_l0_raw``, ``module.weight_ih_l0``, ``module.bias_ih_l0``, ``module.bias_hh_l0``.
    """

    def __init__(self, module: nn.Module, weight_p: float, layer_names: str | Sequence[str] = "weight_hh_l0") -> None:
        super().__init__()
        self.module = module
        self.weight_p = weight_p
        self.layer_names = [layer_names] if isinstance(layer_names, str) else list(layer_names)
        for name in self.layer_names:
            weight = getattr(self.module, name)
            delattr(self.module, name)
            self.register_parameter(f"{name}_raw", nn.Parameter(weight.data))
            self._give(name, weight.detach())
        if isinstance(self.module, nn.RNNBase):
            self.module.flatten_parameters = _no_flatten

    def _give(self, name: str, value: torch.Tensor) -> None:
        # a plain tensor (never an nn.Parameter), so the wrapped module does not re-register it
        setattr(self.module, name, value)

    def _setweights(self) -> None:
        for name in self.layer_names:
            raw = getattr(self, f"{name}_raw")
            self._give(name, F.dropout(raw, p=self.weight_p) if self.training else raw.clone())

    def forward(self, *args: Any) -> Any:
        self._setweights()
        try:
            with warnings.catch_warnings():
                # the RNN warns that its weights are not one contiguous chunk: expected, they are rebuilt
                warnings.simplefilter("ignore", category=UserWarning)
                return self.module(*args)
        finally:
            # leave a detached placeholder behind (autograd keeps what it needs), so that the model can be
            # deep-copied or pickled between forwards
            for name in self.layer_names:
                self._give(name, getattr(self, f"{name}_raw").detach())

    def reset(self) -> None:
        for name in self.layer_names:
            self._give(name, getattr(self, f"{name}_raw").detach())
        if hasattr(self.module, "reset"):
            self.module.reset()

    def extra_repr(self) -> str:
        return f"weight_p={self.weight_p}, layer_names={self.layer_names}"


class EmbeddingDropout(nn.Module):
    """Drops whole rows of the embedding matrix of ``emb`` (a word is either fully kept or zeroed), rescaled."""

    def __init__(self, emb: nn.Embedding, embed_p: float) -> None:
        super().__init__()
        self.emb = emb
        self.embed_p = embed_p

    def forward(self, words: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        weight = self.emb.weight
        if self.training and self.embed_p != 0:
            weight = weight * dropout_mask(weight.data, (weight.size(0), 1), self.embed_p)
        if scale:
            weight = weight * scale
        padding_idx = self.emb.padding_idx if self.emb.padding_idx is not None else -1
        return F.embedding(words, weight, padding_idx, self.emb.max_norm, self.emb.norm_type,
                           self.emb.scale_grad_by_freq, self.emb.sparse)

    def extra_repr(self) -> str:
        return f"embed_p={self.embed_p}"


# --------------------------------------------------------------------------------------------- AWD-LSTM

HiddenState = tuple[torch.Tensor, torch.Tensor]


class AWD_LSTM(nn.Module):
    """The AWD-LSTM of Merity et al. (https://arxiv.org/abs/1708.02182), laid out as fastai 2.8 builds it.

    Children, in registration order: ``encoder`` (``nn.Embedding``, ``padding_idx=pad_token``),
    ``encoder_dp`` (``EmbeddingDropout`` around that same embedding), ``rnns`` (``n_layers`` single-layer
    ``nn.LSTM`` in ``WeightDropout``; the last one outputs ``emb_sz``, the others ``n_hid``), ``input_dp``
    and ``hidden_dps`` (``RNNDropout``). The hidden state lives in ``self.hidden`` (not in the state_dict),
    carries over from one call to the next, and ``reset()`` zeroes it.
    """

    initrange = 0.1

    def __init__(self, vocab_sz: int, emb_sz: int = 400, n_hid: int = 1152, n_layers: int = 3, pad_token: int = 1,
                 hidden_p: float = 0.2, input_p: float = 0.6, embed_p: float = 0.1, weight_p: float = 0.5,
                 bidir: bool = False) -> None:
        super().__init__()
        self.emb_sz, self.n_hid, self.n_layers, self.pad_token = emb_sz, n_hid, n_layers, pad_token
        self.bs = 1
        self.n_dir = 2 if bidir else 1
        self.encoder = nn.Embedding(vocab_sz, emb_sz, padding_idx=pad_token)
        self.encoder_dp = EmbeddingDropout(self.encoder, embed_p)
        self.rnns = nn.ModuleList([
            self._one_rnn(emb_sz if layer == 0 else n_hid, self._n_out(layer), bidir, weight_p)
            for layer in range(n_layers)])
        with torch.no_grad():
            self.encoder.weight.uniform_(-self.initrange, self.initrange)
        self.input_dp = RNNDropout(input_p)
        self.hidden_dps = nn.ModuleList([RNNDropout(hidden_p) for _ in range(n_layers)])
        self.hidden: list[HiddenState] = []
        self.reset()

    def _n_out(self, layer: int) -> int:
        """Hidden size per direction of LSTM number ``layer``."""
        return (self.n_hid if layer != self.n_layers - 1 else self.emb_sz) // self.n_dir

    @staticmethod
    def _one_rnn(n_in: int, n_out: int, bidir: bool, weight_p: float) -> WeightDropout:
        return WeightDropout(nn.LSTM(n_in, n_out, 1, batch_first=True, bidirectional=bidir), weight_p)

    def forward(self, inp: torch.Tensor, from_embeds: bool = False) -> torch.Tensor:
        bs = inp.shape[0]
        if bs != self.bs:
            self._change_hidden(bs)
        output = self.input_dp(inp if from_embeds else self.encoder_dp(inp))
        new_hidden = []
        for layer, (rnn, hid_dp) in enumerate(zip(self.rnns, self.hidden_dps)):
            output, new_h = rnn(output, self.hidden[layer])
            new_hidden.append(new_h)
            if layer != self.n_layers - 1:
                output = hid_dp(output)
        self.hidden = [(h.detach(), c.detach()) for h, c in new_hidden]
        return output

    def _one_hidden(self, layer: int) -> HiddenState:
        ref = self.encoder.weight
        nh = self._n_out(layer)
        return ref.new_zeros(self.n_dir, self.bs, nh), ref.new_zeros(self.n_dir, self.bs, nh)

    def _change_one_hidden(self, layer: int, bs: int) -> HiddenState:
        """The hidden state of one LSTM for a batch of ``bs``: zero rows appended, or trailing rows dropped."""
        h, c = self.hidden[layer]
        if self.bs < bs:
            extra = h.new_zeros(self.n_dir, bs - self.bs, self._n_out(layer))
            return torch.cat([h, extra], dim=1), torch.cat([c, extra], dim=1)
        if self.bs > bs:
            return h[:, :bs].contiguous(), c[:, :bs].contiguous()
        return h, c

    def _change_hidden(self, bs: int) -> None:
        self.hidden = [self._change_one_hidden(layer, bs) for layer in range(self.n_layers)]
        self.bs = bs

    def reset(self) -> None:
        """Zero the hidden state (keeping the current batch size) and reset the weight-dropped LSTMs."""
        for rnn in self.rnns:
            if hasattr(rnn, "reset"):
                rnn.reset()
        self.hidden = [self._one_hidden(layer) for layer in range(self.n_layers)]


awd_lstm_lm_config: dict[str, Any] = {
    "emb_sz": 400, "n_hid": 1152, "n_layers": 3, "pad_token": 1, "bidir": False, "output_p": 0.1,
    "hidden_p": 0.15, "input_p": 0.25, "embed_p": 0.02, "weight_p": 0.2, "tie_weights": True, "out_bias": True}

awd_lstm_clas_config: dict[str, Any] = {
    "emb_sz": 400, "n_hid": 1152, "n_layers": 3, "pad_token": 1, "bidir": False, "output_p": 0.4,
    "hidden_p": 0.3, "input_p": 0.4, "embed_p": 0.05, "weight_p": 0.5}


# --------------------------------------------------------------------------------------------- splitters

def awd_lstm_lm_groups(n_layers: int = 3) -> dict[str, list[str]]:
    """A language model's parameter groups as qualified module names: one per LSTM, then embedding + decoder.

    The splitters below are built on these names, and the gallery draws them as an overlay.
    """
    groups = {f"lstm {i}": [f"0.rnns.{i}", f"0.hidden_dps.{i}"] for i in range(n_layers)}
    groups["embedding + decoder"] = ["0.encoder", "0.encoder_dp", "1"]
    return groups


def awd_lstm_clas_groups(n_layers: int = 3) -> dict[str, list[str]]:
    """A text classifier's parameter groups as qualified module names: embedding, one per LSTM, then the head."""
    groups = {"embedding": ["0.module.encoder", "0.module.encoder_dp"]}
    groups.update({f"lstm {i}": [f"0.module.rnns.{i}", f"0.module.hidden_dps.{i}"] for i in range(n_layers)})
    groups["head"] = ["1"]
    return groups


def _group_params(model: nn.Module, groups: dict[str, list[str]]) -> list[list[nn.Parameter]]:
    out = []
    for names in groups.values():
        seen: dict[int, nn.Parameter] = {}
        for name in names:
            for p in model.get_submodule(name).parameters():
                seen.setdefault(id(p), p)  # a tied or shared weight counts once per group
        out.append(list(seen.values()))
    return out


def awd_lstm_lm_split(model: nn.Module) -> list[list[nn.Parameter]]:
    """Parameter groups of a language model for discriminative learning rates (4 for a 3-layer AWD-LSTM)."""
    return _group_params(model, awd_lstm_lm_groups(len(model[0].rnns)))


def awd_lstm_clas_split(model: nn.Module) -> list[list[nn.Parameter]]:
    """Parameter groups of a text classifier for gradual unfreezing (5 for a 3-layer AWD-LSTM)."""
    return _group_params(model, awd_lstm_clas_groups(len(model[0].module.rnns)))


# --------------------------------------------------------------------------------------------- language model

class LinearDecoder(nn.Module):
    """Output dropout then a Linear from ``n_hid`` to the vocabulary, its weight optionally tied to an embedding.

    Returns ``(logits, input, dropped_input)`` as fastai's does (the last two feed AR/TAR regularisation).
    """

    initrange = 0.1

    def __init__(self, n_out: int, n_hid: int, output_p: float = 0.1, tie_encoder: nn.Module | None = None,
                 bias: bool = True) -> None:
        super().__init__()
        self.decoder = nn.Linear(n_hid, n_out, bias=bias)
        with torch.no_grad():
            self.decoder.weight.uniform_(-self.initrange, self.initrange)
            if bias:
                self.decoder.bias.zero_()
        self.output_dp = RNNDropout(output_p)
        if tie_encoder is not None:
            self.decoder.weight = tie_encoder.weight

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dp_inp = self.output_dp(input)
        return self.decoder(dp_inp), input, dp_inp


class SequentialRNN(nn.Sequential):
    """An ``nn.Sequential`` whose ``reset()`` resets every child that has one."""

    def reset(self) -> None:
        for child in self.children():
            if hasattr(child, "reset"):
                child.reset()


_MODEL_META: dict[type, dict[str, Any]] = {
    AWD_LSTM: {"hid_name": "emb_sz", "config_lm": awd_lstm_lm_config, "split_lm": awd_lstm_lm_split,
               "config_clas": awd_lstm_clas_config, "split_clas": awd_lstm_clas_split},
}


def _meta(arch: Callable[..., nn.Module]) -> dict[str, Any]:
    try:
        return _MODEL_META[arch]
    except KeyError:
        raise ValueError(f"no text model metadata for {arch!r}; known: "
                         f"{', '.join(a.__name__ for a in _MODEL_META)}") from None


def _scaled_config(config: dict[str, Any], drop_mult: float) -> dict[str, Any]:
    return {k: v * drop_mult if k.endswith("_p") else v for k, v in config.items()}


def get_language_model(arch: Callable[..., nn.Module], vocab_sz: int, config: dict[str, Any] | None = None,
                       drop_mult: float = 1.0) -> SequentialRNN:
    """``SequentialRNN(arch(vocab_sz, **config), LinearDecoder)``; every ``*_p`` in the config times ``drop_mult``.

    With ``tie_weights`` (the default config) the decoder's weight *is* the encoder's embedding weight.
    """
    meta = _meta(arch)
    config = _scaled_config(dict(meta["config_lm"] if config is None else config), drop_mult)
    tie_weights, output_p, out_bias = (config.pop(k) for k in ("tie_weights", "output_p", "out_bias"))
    init = config.pop("init", None)
    encoder = arch(vocab_sz, **config)
    decoder = LinearDecoder(vocab_sz, config[meta["hid_name"]], output_p,
                            tie_encoder=encoder.encoder if tie_weights else None, bias=out_bias)
    model = SequentialRNN(encoder, decoder)
    return model if init is None else model.apply(init)


# --------------------------------------------------------------------------------------------- classifier

def _pad_rows(t: torch.Tensor, bs: int) -> torch.Tensor:
    """Append zero rows to ``t`` up to ``bs`` rows."""
    if t.size(0) < bs:
        return torch.cat([t, t.new_zeros(bs - t.size(0), *t.shape[1:])])
    return t


class SentenceEncoder(nn.Module):
    """BPT3C: run ``module`` over a padded batch of documents one ``bptt``-token chunk at a time.

    The hidden state is reset at the start of each batch and carried from chunk to chunk. For each chunk
    the module runs on the first ``real_bs`` rows, where ``real_bs`` is the number of rows whose chunk does
    not start with ``pad_idx`` (exactly as fastai 2.8). That is right for batches laid out like
    :func:`pad_batch` and sorted longest first, as fastai's dataloader sorts them: then the rows that have
    not started yet are the last ones. Only the outputs of the last ``max_len`` tokens are kept (chunks
    starting at ``i`` with ``seq_len - i <= max_len``); they are padded back to the full batch with zeros.
    Returns ``(outputs, padding_mask)``.
    """

    def __init__(self, bptt: int, module: nn.Module, pad_idx: int = 1, max_len: int | None = None) -> None:
        super().__init__()
        self.bptt, self.module, self.pad_idx, self.max_len = bptt, module, pad_idx, max_len

    def reset(self) -> None:
        if hasattr(self.module, "reset"):
            self.module.reset()

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bs, sl = input.size()
        self.reset()
        mask = input == self.pad_idx
        outs, masks = [], []
        for i in range(0, sl, self.bptt):
            end = min(i + self.bptt, sl)
            real_bs = int((input[:, i] != self.pad_idx).long().sum())
            o = self.module(input[:real_bs, i:end])
            if self.max_len is None or sl - i <= self.max_len:
                outs.append(o)
                masks.append(mask[:, i:end])
        return torch.cat([_pad_rows(o, bs) for o in outs], dim=1), torch.cat(masks, dim=1)

    def extra_repr(self) -> str:
        return f"bptt={self.bptt}, pad_idx={self.pad_idx}, max_len={self.max_len}"


def masked_concat_pool(output: torch.Tensor, mask: torch.Tensor, bptt: int) -> torch.Tensor:
    """``[last, max, mean]`` over the non-padding positions of ``output`` (bs, seq, n) -> (bs, 3n).

    "Last" is the output at the last real token: the padding after it is counted in the final ``bptt``
    positions only (where :func:`pad_batch` puts the trailing padding).
    """
    lens = output.shape[1] - mask.long().sum(dim=1)
    last_lens = mask[:, -bptt:].long().sum(dim=1)
    avg_pool = output.masked_fill(mask[:, :, None], 0).sum(dim=1)
    avg_pool = avg_pool / lens.to(avg_pool.dtype)[:, None]
    max_pool = output.masked_fill(mask[:, :, None], -float("inf")).max(dim=1)[0]
    last = output[torch.arange(0, output.size(0), device=output.device), -last_lens - 1]
    return torch.cat([last, max_pool, avg_pool], 1)


class PoolingLinearClassifier(nn.Module):
    """Concat pooling of the encoder outputs, then one ``LinBnDrop`` per consecutive pair of ``dims``.

    Each hidden block is BatchNorm1d -> Dropout(p) -> Linear(bias=False) -> ReLU (its own ReLU, where
    fastai shares one); the last has no activation. Returns ``(logits, outputs, outputs)`` as fastai's does.
    """

    def __init__(self, dims: Sequence[int], ps: Sequence[float], bptt: int,
                 y_range: tuple[float, float] | None = None) -> None:
        super().__init__()
        dims, ps = list(dims), list(ps)
        if len(ps) != len(dims) - 1:
            raise ValueError(f"{len(dims) - 1} layers need as many dropout values, got {len(ps)}")
        blocks: list[nn.Module] = []
        for k, (n_in, n_out, p) in enumerate(zip(dims[:-1], dims[1:], ps)):
            act = nn.ReLU(inplace=True) if k < len(dims) - 2 else None
            blocks.append(LinBnDrop(n_in, n_out, p=p, act=act))
        if y_range is not None:
            blocks.append(SigmoidRange(*y_range))
        self.layers = nn.Sequential(*blocks)
        self.bptt = bptt

    def forward(self, input: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, mask = input
        x = self.layers(masked_concat_pool(out, mask, self.bptt))
        return x, out, out


def get_text_classifier(arch: Callable[..., nn.Module], vocab_sz: int, n_class: int, seq_len: int = 72,
                        config: dict[str, Any] | None = None, drop_mult: float = 1.0,
                        lin_ftrs: Sequence[int] | None = None, ps: Sequence[float] | None = None,
                        pad_idx: int = 1, max_len: int | None = 72 * 20,
                        y_range: tuple[float, float] | None = None) -> SequentialRNN:
    """``SequentialRNN(SentenceEncoder(seq_len, arch(...)), PoolingLinearClassifier(...))``.

    The head's sizes are ``[3 * emb_sz] + lin_ftrs + [n_class]`` (``lin_ftrs`` defaults to ``[50]``) and its
    dropouts ``[output_p] + ps`` (``ps`` defaults to 0.1 per hidden layer); ``*_p`` config values are
    multiplied by ``drop_mult``.
    """
    meta = _meta(arch)
    config = _scaled_config(dict(meta["config_clas"] if config is None else config), drop_mult)
    lin_ftrs = [50] if lin_ftrs is None else list(lin_ftrs)
    ps = [0.1] * len(lin_ftrs) if ps is None else list(ps)
    dims = [config[meta["hid_name"]] * 3] + lin_ftrs + [n_class]
    ps = [config.pop("output_p")] + ps
    init = config.pop("init", None)
    encoder = SentenceEncoder(seq_len, arch(vocab_sz, **config), pad_idx=pad_idx, max_len=max_len)
    model = SequentialRNN(encoder, PoolingLinearClassifier(dims, ps, bptt=seq_len, y_range=y_range))
    return model if init is None else model.apply(init)


def pad_batch(sequences: Sequence[Sequence[int] | torch.Tensor], pad_idx: int = 1, seq_len: int = 72) -> torch.Tensor:
    """Stack token sequences into a ``(bs, longest)`` LongTensor padded like fastai's classification batches.

    Each row is padded to the longest length: as many whole ``seq_len`` chunks of ``pad_idx`` as fit go at
    the start, the remainder at the end (lengths 200, 150, 100, 60 with ``seq_len=72``: 0, 0, 72, 72 pads
    in front, 0, 50, 28, 68 behind). Row order is kept; fastai sorts a batch longest first.
    """
    rows = [torch.as_tensor(s, dtype=torch.long).reshape(-1) for s in sequences]
    if not rows:
        raise ValueError("pad_batch needs at least one sequence")
    longest = max(r.numel() for r in rows)
    out = []
    for r in rows:
        n_pad = longest - r.numel()
        lead = r.new_full(((n_pad // seq_len) * seq_len,), pad_idx)
        trail = r.new_full((n_pad % seq_len,), pad_idx)
        out.append(torch.cat([lead, r, trail]))
    return torch.stack(out)
