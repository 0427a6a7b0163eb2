"""Regenerate the golden traces in this folder (needs torch): ``python tests/golden/make_traces.py``.

The renderer golden tests (``tests/test_golden.py``) read these JSON files and need no torch; rerun this
only when the trace format or the tracer changes what it records, then refresh the expected outputs with
``pytest tests/test_golden.py --update-golden`` and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import shapetrace

HERE = Path(__file__).parent


class Upsampler(nn.Sequential):
    """Conv, ReLU, 4x upsample: the totals' hand-computed example (see tests/test_table.py)."""

    def __init__(self) -> None:
        super().__init__(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=4))


class Tagger(nn.Module):
    """An embedding and one LSTM run over two chunks: (h, c) tuples, a repeated call, int64 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.rnn = nn.LSTM(16, 24, batch_first=True)
        self.head = nn.Linear(24, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.emb(tokens)
        state = None
        outs = []
        for chunk in x.split(6, 1):
            out, state = self.rnn(chunk, state)
            outs.append(out)
        return self.head(torch.cat(outs, 1))


def failing() -> nn.Module:
    """The second Linear expects 5 features and gets 8: the forward fails in call 3."""
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(5, 2), nn.ReLU())


def main() -> None:
    torch.manual_seed(0)
    traces = {
        "upsampler": shapetrace.trace(Upsampler(), torch.randn(2, 3, 48, 48), ops=True),
        "tagger": shapetrace.trace(Tagger().eval(), torch.randint(0, 50, (2, 12)), ops=True),
        "failing": shapetrace.trace(failing(), torch.randn(3, 4), strict=False),
    }
    for name, trace in traces.items():
        trace.meta.pop("torch", None)  # the torch version would churn the files on every upgrade
        (HERE / f"{name}.json").write_text(trace.to_json() + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
