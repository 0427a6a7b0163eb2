"""On ``meta``, a device move of a ``meta`` tensor stays on ``meta``, with the dtype asked for.

RoBERTa and XLM-R compute position ids from the real integer ids (integer inputs stay real on ``meta``) and move
their ``token_type_ids`` buffer, on ``meta`` like every buffer, to those positions' device. A move changes no
shape, and in a shape-only run every device stands for the model's: the trace answers it on ``meta`` instead of
copying values out that ``meta`` does not have.
"""

from __future__ import annotations

import torch
from torch import nn

import shapetrace
from shapetrace.tracer.records import iter_tensors
from shapetrace.tracer.shape_only import ShapeOnlyUnsupported


class RobertaStyleEmbeddings(nn.Module):
    """An integer buffer moved to the device of positions computed from the real ids, as RoBERTa does."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("token_type_ids", torch.zeros(1, 16, dtype=torch.long), persistent=False)
        self.word, self.kind = nn.Embedding(10, 4), nn.Embedding(2, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = ids.ne(0).int().cumsum(1)
        kinds = self.token_type_ids.to(positions.device)[:, : ids.shape[1]]
        return self.word(ids) + self.kind(kinds)


def test_an_integer_buffer_moved_to_the_device_of_real_positions_traces_on_meta_with_the_cpus_shapes() -> None:
    ids = torch.randint(1, 10, (1, 7))
    meta = shapetrace.trace(RobertaStyleEmbeddings().eval(), ids, device="meta")
    cpu = shapetrace.trace(RobertaStyleEmbeddings().eval(), ids)
    assert meta.outputs.shape == cpu.outputs.shape == (1, 7, 4)


class Moves(nn.Module):
    """Every spelling of a device move, some with a dtype change."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("table", torch.zeros(2, 3, dtype=torch.long))
        self.lin = nn.Linear(3, 3)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.lin(ids.float())
        return (self.table.cpu(), self.table.to(ids.int()), self.table.to("cpu", torch.float64),
                self.table.to(device=ids.device, dtype=torch.float16), self.table.type_as(h), h.to(ids.device),
                h.cpu().to(ids))


def test_device_moves_of_meta_tensors_stay_on_meta_with_the_dtypes_and_shapes_of_the_cpu() -> None:
    ids = torch.randint(0, 5, (2, 3))
    meta = shapetrace.trace(Moves().eval(), ids, device="meta")
    cpu = shapetrace.trace(Moves().eval(), ids)
    got = [(m.shape, m.dtype, m.device) for _, m in iter_tensors(meta.outputs)]
    want = [(m.shape, m.dtype, "meta") for _, m in iter_tensors(cpu.outputs)]
    assert got == want


def test_an_op_torch_has_no_meta_kernel_for_is_not_said_to_depend_on_tensor_values() -> None:
    cause = NotImplementedError("aten::histogram.bin_ct: attempted to run this operator with Meta tensors, but there "
                                "was no fake impl or Meta kernel registered.")
    message = str(ShapeOnlyUnsupported("torch.histogram", cause))
    assert "torch has no 'meta' kernel for it" in message
    assert "depends on tensor values that" not in message


class ToTensorKeyword(nn.Module):
    """``.to(tensor=like)``: torch's keyword for the tensor form of ``.to``, ``like`` a real tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.l(x).to(tensor=like)


def test_a_meta_tensor_moved_with_the_tensor_keyword_stays_on_meta_with_that_tensors_dtype() -> None:
    like = torch.zeros(1, dtype=torch.int64)
    meta = shapetrace.trace(ToTensorKeyword(), torch.randn(2, 4), like, device="meta")
    cpu = shapetrace.trace(ToTensorKeyword(), torch.randn(2, 4), like)
    assert meta.outputs.shape == cpu.outputs.shape == (2, 4)
    assert meta.outputs.dtype == cpu.outputs.dtype == "int64"
