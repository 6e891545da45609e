"""Backbone state_dict <-> neutral weights (Keras layout): conv OIHW <-> HWIO, Linear (out, in) <-> (in, out).
The flatten order needs no reshuffle because the backbone flattens in NHWC order like Keras."""
from __future__ import annotations

import numpy as np
import torch


def to_neutral(model) -> dict:
    out = {}
    for name, module in model.net.named_children():
        if isinstance(module, torch.nn.Conv2d):
            out[f"{name}/kernel"] = module.weight.detach().cpu().numpy().transpose(2, 3, 1, 0).copy()  # OIHW -> HWIO
        elif isinstance(module, torch.nn.Linear):
            out[f"{name}/kernel"] = module.weight.detach().cpu().numpy().T.copy()  # (out, in) -> (in, out)
        else:
            continue
        out[f"{name}/bias"] = module.bias.detach().cpu().numpy().copy()
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def from_neutral(model, weights: dict) -> None:
    with torch.no_grad():
        for name, module in model.net.named_children():
            if isinstance(module, torch.nn.Conv2d):
                kernel = np.ascontiguousarray(weights[f"{name}/kernel"].transpose(3, 2, 0, 1))  # HWIO -> OIHW
            elif isinstance(module, torch.nn.Linear):
                kernel = np.ascontiguousarray(weights[f"{name}/kernel"].T)  # (in, out) -> (out, in)
            else:
                continue
            if tuple(module.weight.shape) != kernel.shape:
                raise ValueError(f"{name}/kernel: model has {tuple(module.weight.shape)}, weights give {kernel.shape}")
            module.weight.copy_(torch.from_numpy(kernel))
            module.bias.copy_(torch.from_numpy(np.asarray(weights[f"{name}/bias"])))
