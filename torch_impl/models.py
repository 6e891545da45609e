"""nn.Module backbones built from the shared layer list in `data.arch`, Keras-equivalent:

- Conv2d with padding k // 2: Keras 'same' for an odd kernel at stride 1 (at stride 2 Keras pads
  bottom/right only; `same_padding` refuses that case rather than silently differ);
- Flatten in Keras's NHWC order, (B, C, H, W) -> (B, H, W, C) -> (B, H*W*C), so Dense kernels move
  between the frameworks with a plain transpose and give the same logits.

- ReLU after MaxPool where Keras has Conv(relu) -> MaxPool: max and ReLU commute (ReLU is
  monotonic), so the output is bit-identical, and the gradient is too (it reaches the window's
  argmax exactly when that max is > 0, in either order; windows that are all <= 0 pass no gradient
  either way). ReLU then touches 4x fewer elements: +30 % CNN training speed on this CPU (Keras gets
  the same saving by fusing conv+bias+relu in oneDNN).

- Dropout draws its mask for the global batch when data parallel (ReplicaDropout), so N replicas
  drop what one device would (on CPU bit for bit).

Inputs are NCHW (the datamodule converts once).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from data.arch import KERNEL, POOL, build_layers


def same_padding(kernel: int, stride: int = 1) -> int:
    """Symmetric padding equal to Keras padding='same'; refuses the cases where Keras pads one side."""
    if stride != 1 or kernel % 2 == 0:
        raise ValueError(f"Keras 'same' padding with kernel {kernel}, stride {stride} pads bottom/right only; "
                         "nn.Conv2d pads symmetrically, so this port supports odd kernels at stride 1 only")
    return kernel // 2


class FlattenNHWC(nn.Module):
    """Flatten in Keras's order: rows, then columns, then channels."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1).flatten(1)  # (B, C, H, W) -> (B, H, W, C) -> (B, H*W*C)


class ReplicaDropout(nn.Dropout):
    """nn.Dropout that, data parallel, drops what one device would. Replica `rank` of `world`, holding
    rows rank*B..(rank+1)*B of each global batch of world*B samples (this project's DDP split), draws
    the mask for all world*B rows, as the one-device run does, and keeps its own rows. Every replica's
    generator is seeded alike and draws the same amount, so they stay in step; plain nn.Dropout would
    draw each replica the same (B, ...) mask (and the one-device run another). The mask is F.dropout
    on ones of the global shape: the one-device run's draw, 0 or 1 / (1 - p) (on CPU bit for bit,
    measured; on a GPU F.dropout's fused kernel draws it, not measured). On one replica it is
    F.dropout itself. Costs world times the random draws of a Dropout layer.
    LitClassifier.setup sets (rank, world) from the Trainer."""

    rank, world = 0, 1

    def forward(self, x):
        if not self.training or self.p == 0 or self.world == 1:
            return super().forward(x)
        b = x.shape[0]
        keep = F.dropout(torch.ones((self.world * b, *x.shape[1:]), dtype=x.dtype, device=x.device), self.p)
        return x * keep[self.rank * b: (self.rank + 1) * b]  # (B, ...): this replica's rows


class Backbone(nn.Module):
    """The MLP or CNN as a plain nn.Module; `self.layers` maps neutral names to modules."""

    def __init__(self, name: str, input_shape: tuple, num_classes: int, widths=None, dropout: float = 0.0):
        super().__init__()
        self.spec = build_layers(name, input_shape, num_classes, widths, dropout)
        # what rebuilds it: LitClassifier's hyper-parameters, stored in every .ckpt (plain types: weights_only loads)
        self.description = {"model": name, "input_shape": [int(d) for d in input_shape], "num_classes": int(num_classes),
                            "widths": [int(w) for w in widths] if widths else None, "dropout": float(dropout)}
        mods = []
        for i, layer in enumerate(self.spec):
            if layer.kind == "conv":
                mods.append((layer.name, nn.Conv2d(layer.fan_in, layer.units, KERNEL, padding=same_padding(KERNEL))))
                if layer.relu and not (i + 1 < len(self.spec) and self.spec[i + 1].kind == "pool"):
                    mods.append((f"{layer.name}_relu", nn.ReLU()))
            elif layer.kind == "pool":
                mods.append((layer.name, nn.MaxPool2d(POOL)))  # (B, C, H, W) -> (B, C, H//2, W//2)
                prev = self.spec[i - 1]
                if prev.kind == "conv" and prev.relu:  # the conv's ReLU, moved after the pool (see above)
                    mods.append((f"{prev.name}_relu", nn.ReLU()))
            elif layer.kind == "flatten":
                mods.append((layer.name, FlattenNHWC()))
            elif layer.kind == "dropout":
                mods.append((layer.name, ReplicaDropout(layer.rate)))  # active in train() mode only
            else:
                mods.append((layer.name, nn.Linear(layer.fan_in, layer.units)))
                if layer.relu:
                    mods.append((f"{layer.name}_relu", nn.ReLU()))
        self.net = nn.Sequential(OrderedDict(mods))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)  # (B, C, H, W) -> (B, classes) logits


def build_model(name: str, input_shape: tuple, num_classes: int, widths=None, dropout: float = 0.0) -> Backbone:
    return Backbone(name, input_shape, num_classes, widths, dropout)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def rng_state() -> dict:
    """torch's generators, which dropout masks are drawn from: saved with checkpoints, so a resumed run
    draws the masks the uninterrupted one would."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict | None) -> None:
    if not state:  # a checkpoint from before the generators were saved
        return
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
