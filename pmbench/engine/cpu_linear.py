"""Prepacked float32 weights for the CPU matmuls of inference, the same for every method.

Why: PyTorch's CPU `nn.Linear` calls MKL's GEMM, which re-packs the whole weight
matrix at every call. With one input row MKL takes a GEMV path that reads the weight
once, but from 4 rows on (a decoding step over 8 branches or 8 batch rows) the
re-packing makes the step about twice the cost of a 1-row step, although both read the
same weights once. oneDNN can pack a weight once, ahead of time, into its blocked
layout (`torch.ops.mkldnn._reorder_linear_weight`, what `torch.compile`'s CPU weight
prepacking uses); its GEMM then streams that layout directly. Measured on this CPU
(SmolLM2-135M shapes, all 211 matmuls of a step, one thread, float32):

    rows:                1     2     3     4     8     16    128   512
    MKL (torch), ms:     37.5  40.6  44.2  67.7  94.5  97.0  286   1009
    oneDNN prepacked:    42.0  44.8  47.2  48.2  56.3  69.1  260   978

So each layer uses the kernel that is faster for the shape it is given: MKL below
`MIN_ROWS` rows, the prepacked weight from `MIN_ROWS` on. This is a property of the
model loader, applied to every method alike (sequential, batch, rope2d); the run record
says whether it was on (`settings.cpu_prepack`, `linear_kernel`). bfloat16 is left
alone: torch already routes it to oneDNN, and prepacking measured no faster.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn

MIN_ROWS = 4  # from the table above; below it MKL's GEMV path wins

# Packed weights by id, for the compiled step: the oneDNN tensor is opaque to torch.compile,
# so the op below hides it behind an integer key. Inductor left to itself would pack a
# frozen float32 weight for MKL instead (`mkl._mkl_linear`), slower from 4 rows on. A
# registered op reaches no object but through such a process-wide table; each entry
# leaves it with its module (a process that loads many models does not keep their weights).
_PACKED: dict[int, torch.Tensor] = {}


# Registered with the low-level torch.library API: its dispatch costs a fraction of
# @torch.library.custom_op's, which at 211 linears a step ate much of the compiled step's
# gain (benchmarks/README.md, "The compiled step").
_LIB = torch.library.Library("pmbench", "DEF")
_LIB.define("prepacked_linear(Tensor x, Tensor? bias, int out_features, int key) -> Tensor")


def prepacked_linear(x: torch.Tensor, bias: torch.Tensor | None, out_features: int,
                     key: int) -> torch.Tensor:
    """oneDNN's GEMM on the weight packed under `key`, as one opaque op."""
    return torch.ops.mkldnn._linear_pointwise(x, _PACKED[key], bias, "none", [], "")


_LIB.impl("prepacked_linear", prepacked_linear, "CPU")


@torch.library.register_fake("pmbench::prepacked_linear", lib=_LIB)
def _(x: torch.Tensor, bias: torch.Tensor | None, out_features: int,
      key: int) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], out_features)


class PrepackedLinear(nn.Module):
    """A drop-in for an inference-only `nn.Linear` holding a oneDNN-prepacked weight."""

    def __init__(self, linear: nn.Linear, min_rows: int = MIN_ROWS) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # the same Parameter (tied embeddings stay tied)
        self.bias = linear.bias
        self.min_rows = min_rows
        # A plain attribute, not a buffer: state_dict and .to() never see the opaque
        # oneDNN tensor, so checkpoints and device moves behave as for nn.Linear.
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach())
        self.key = id(self)
        _PACKED[self.key] = self.packed
        weakref.finalize(self, _PACKED.pop, self.key, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() < self.min_rows * self.in_features:
            return F.linear(x, self.weight, self.bias)
        if torch.compiler.is_compiling():  # compiled step (engine/compile.py)
            return torch.ops.pmbench.prepacked_linear(x, self.bias, self.out_features,
                                                      self.key)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"prepacked for >= {self.min_rows} rows"


def prepack_linears(model: nn.Module) -> int:
    """Swap every float32 CPU `nn.Linear` of an inference model; return how many (0 on
    other devices and dtypes, or where torch was built without oneDNN)."""
    if not torch.backends.mkldnn.is_available():
        return 0
    swaps = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is nn.Linear
        and child.weight.device.type == "cpu"
        and child.weight.dtype == torch.float32
    ]
    for parent, name, child in swaps:
        setattr(parent, name, PrepackedLinear(child))
    return len(swaps)
