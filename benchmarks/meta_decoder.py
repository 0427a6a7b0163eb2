"""Shape-only tracing cost of a Llama-7B-shaped decoder on ``meta`` (32 layers, width 4096, MLP 11008).

The decoder is plain torch (RMSNorm, multi-head attention through ``scaled_dot_product_attention``, a
SwiGLU MLP), built on the ``meta`` device so it needs no memory. Prints the minimum over rounds of the plain
forward and of ``shapetrace.trace(..., device="meta")`` (and with ``ops=True``), interleaved.

    python benchmarks/meta_decoder.py            # 7B shape, 7 rounds
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

import shapetrace


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(dim, dim, bias=False) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (p(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.post_attention_layernorm = RMSNorm(dim)
        self.mlp = MLP(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    def __init__(self, vocab: int = 32000, dim: int = 4096, layers: int = 32, heads: int = 32,
                 hidden: int = 11008) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(Block(dim, heads, hidden) for _ in range(layers))
        self.norm = RMSNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--layers", type=int, default=32)
    args = parser.parse_args()
    with torch.device("meta"):
        model = Decoder(layers=args.layers).eval()
    ids = torch.zeros(1, 2048, dtype=torch.long, device="meta")

    def plain() -> object:
        with torch.no_grad():
            return model(ids)

    fns = {"plain forward": plain,
           "shapetrace.trace": lambda: shapetrace.trace(model, ids, device="meta"),
           "trace(ops=True)": lambda: shapetrace.trace(model, ids, device="meta", ops=True)}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    calls = len(shapetrace.trace(model, ids, device="meta").calls)
    print(f"Llama-7B-shaped decoder ({args.layers} layers, {calls} module calls) on meta, minimum of "
          f"{args.rounds} interleaved rounds:")
    for name, ts in times.items():
        print(f"  {name}: {min(ts) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
