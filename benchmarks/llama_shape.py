"""A Llama-shaped decoder in plain PyTorch, for shape-only tracing benchmarks and tests.

The layer structure of Llama 2/3 (token embedding; per layer RMSNorm, attention with rotary position
embeddings and grouped-query key/value heads, RMSNorm, SwiGLU MLP; final norm; LM head), with its sizes
as parameters: ``llama_7b()`` and ``llama_70b()`` give the published shapes. Built on ``meta`` it costs no
memory, which is how the benchmarks trace 70 billion parameters on a laptop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LlamaShape:
    vocab: int = 32000
    width: int = 4096
    layers: int = 32
    heads: int = 32
    kv_heads: int = 32
    mlp: int = 11008


def llama_7b(layers: int = 32) -> LlamaShape:
    return LlamaShape(layers=layers)


def llama_70b(layers: int = 80) -> LlamaShape:
    return LlamaShape(width=8192, layers=layers, heads=64, kv_heads=8, mlp=28672)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of ``x`` (batch, heads, seq, head_dim)."""
    a, b = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-b, a], dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, s: LlamaShape) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = s.heads, s.kv_heads, s.width // s.heads
        self.q_proj = nn.Linear(s.width, s.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(s.width, s.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(s.width, s.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(s.heads * self.head_dim, s.width, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


class MLP(nn.Module):
    def __init__(self, s: LlamaShape) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(s.width, s.mlp, bias=False)
        self.up_proj = nn.Linear(s.width, s.mlp, bias=False)
        self.down_proj = nn.Linear(s.mlp, s.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, s: LlamaShape) -> None:
        super().__init__()
        self.input_norm = nn.RMSNorm(s.width)
        self.attn = Attention(s)
        self.post_norm = nn.RMSNorm(s.width)
        self.mlp = MLP(s)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.input_norm(x), cos, sin)
        return x + self.mlp(self.post_norm(x))


class LlamaDecoder(nn.Module):
    def __init__(self, s: LlamaShape) -> None:
        super().__init__()
        self.head_dim = s.width // s.heads
        self.embed = nn.Embedding(s.vocab, s.width)
        self.layers = nn.ModuleList(DecoderLayer(s) for _ in range(s.layers))
        self.norm = nn.RMSNorm(s.width)
        self.lm_head = nn.Linear(s.width, s.vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        pos = torch.arange(ids.shape[1], device=x.device, dtype=torch.float32)
        freqs = 10000.0 ** (-torch.arange(0, self.head_dim, 2, device=x.device, dtype=torch.float32) / self.head_dim)
        angles = torch.outer(pos, freqs)
        cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))


def build_on_meta(shape: LlamaShape) -> LlamaDecoder:
    """The decoder with every parameter on ``meta``: no memory, no initialisation cost."""
    with torch.device("meta"):
        return LlamaDecoder(shape).eval()
