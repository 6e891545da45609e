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


def load_trusted(path, map_location="cpu"):
    """torch.load restricted to tensors and plain containers (weights_only=True): a .ckpt or .pt from
    elsewhere cannot run code while it is read (a full unpickle can). Checkpoints this project writes
    load this way; a file holding other Python objects is refused in one line (DataError)."""
    import pickle

    from data.errors import DataError
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        what = next((ln.strip() for ln in first if "GLOBAL" in ln or "Unsupported" in ln), first[0] if first else "")
        raise DataError(f"{path}: holds Python objects besides tensors ({what}); reading it would run its pickle "
                        f"code, so it is refused. If you trust it, save only its weights: torch.save(torch.load(F, "
                        f"weights_only=False)['state_dict'], 'weights.pt') and convert that") from None
    except (RuntimeError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable torch file ({str(e).strip().splitlines()[0] if str(e).strip() else e})") from None
