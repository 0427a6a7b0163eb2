"""Gallery exhibits for chapter 15's text models: the AWD-LSTM classifier (BPT3C) and the language model."""

from __future__ import annotations

import torch

from ..text import (
    AWD_LSTM,
    awd_lstm_clas_groups,
    awd_lstm_lm_groups,
    get_language_model,
    get_text_classifier,
    pad_batch,
)
from .registry import Exhibit, register

VOCAB = 1000
SEQ_LEN = 72
DOC_LENGTHS = (200, 150, 100, 60)  # sorted longest first, as fastai's dataloader sorts a batch


def _classifier():
    return get_text_classifier(AWD_LSTM, VOCAB, 2, seq_len=SEQ_LEN, max_len=SEQ_LEN * 20).eval()


def _classifier_inputs() -> tuple[tuple, dict]:
    g = torch.Generator().manual_seed(0)
    docs = [torch.randint(2, VOCAB, (n,), generator=g) for n in DOC_LENGTHS]
    return (pad_batch(docs, pad_idx=1, seq_len=SEQ_LEN),), {}


def _language_model():
    return get_language_model(AWD_LSTM, VOCAB).eval()


def _language_model_inputs() -> tuple[tuple, dict]:
    g = torch.Generator().manual_seed(0)
    return (torch.randint(2, VOCAB, (4, SEQ_LEN), generator=g),), {}


register(Exhibit(
    name="awd-lstm-classifier",
    question='How does the classifier read documents longer than its 72-token sequence length (BPT3C)?',
    title="AWD-LSTM text classifier: BPT3C over a padded batch",
    caption=(
        "Four documents of 200, 150, 100 and 60 tokens are padded with token 1 the way fastai's classification "
        "dataloader does it: whole 72-token chunks of padding in front (0, 0, 72, 72) and the remainder "
        "behind (0, 50, 28, 68). The SentenceEncoder feeds the AWD-LSTM one 72-token chunk at a time, "
        "keeping its hidden state from chunk to chunk and running only the rows whose chunk does not start "
        "with padding (fastai runs the first that-many rows, which is why its batches are sorted longest first), "
        "so the AWD-LSTM and each of its three LSTMs are called 3 times, on (2,72), (4,72) and (3,56); the "
        "outputs are padded back to (4,200,400). The head pools the last, maximum and mean "
        "outputs into 1200 values, then BatchNorm1d, Dropout(0.4), Linear(1200,50), ReLU, BatchNorm1d, "
        "Dropout(0.1), Linear(50,2); 20,735,880 parameters with a 1,000-word vocabulary. Colours mark "
        "the five parameter groups used for gradual unfreezing."
    ),
    build=_classifier,
    inputs=_classifier_inputs,
    topic="text",
    options={"depth": 2, "overlays": ["groups"], "param_groups": awd_lstm_clas_groups(3)},
))

register(Exhibit(
    name="awd-lstm-language-model",
    question="What is the language model that the classifier's encoder comes from?",
    title="AWD-LSTM language model with a tied decoder",
    caption=(
        "The language model is the AWD-LSTM (a 400-wide embedding, LSTMs of 1152, 1152 and 400 units with "
        "DropConnect on their hidden-to-hidden weights) followed by a LinearDecoder back to the 1,000-word "
        "vocabulary. The decoder's weight is the embedding matrix itself (weight tying), so the model has "
        "20,674,280 parameters, the shared 400,000 counted once. On a (4,72) batch it returns the logits "
        "(4,72,1000) plus the LSTM output before and after output dropout, (4,72,400) each, which fastai "
        "uses for its activation regularisation. The hidden state carries over to the next batch."
    ),
    build=_language_model,
    inputs=_language_model_inputs,
    topic="text",
    options={"depth": 2, "overlays": ["groups"], "param_groups": awd_lstm_lm_groups(3)},
))
