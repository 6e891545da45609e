"""Optimizers that compute what Keras computes, and the step-indexed LR schedule.

KerasAdam: Keras folds the bias correction into the step size and adds epsilon to the raw
sqrt(v) ("epsilon hat"):
    alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t);  m += (g - m)(1 - beta_1);  v += (g^2 - v)(1 - beta_2)
    p -= alpha * m / (sqrt(v) + epsilon)
Keras computes the bias-correction powers from float32-rounded betas, and uses a float32-rounded
SGD momentum; so does this port (found by matching Keras in float64).
torch.optim.Adam instead divides by (sqrt(v) / sqrt(1 - beta_2^t) + eps): no constant eps makes
the two equal. KerasSGD: Keras keeps lr inside the momentum buffer (m = momentum*m - lr*g), torch
outside (b = momentum*b + g; p -= lr*b): equal at constant lr, different under a schedule.
"""
from __future__ import annotations

import math
import struct

import torch

from data.contract import RunConfig, lr_table


def _f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


class KerasAdam(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-7):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            b1, b2 = group["betas"]
            grads, ms, vs = [p.grad for p in params], [], []
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                ms.append(state["m"])
                vs.append(state["v"])
            t = self.state[params[0]]["step"]
            # Keras raises float32-rounded betas to the power t (found by matching Keras in float64)
            alpha = group["lr"] * math.sqrt(1 - _f32(b2) ** t) / (1 - _f32(b1) ** t)
            torch._foreach_lerp_(ms, grads, 1 - b1)  # m += (g - m)(1 - beta_1)
            torch._foreach_lerp_(vs, torch._foreach_mul(grads, grads), 1 - b2)  # v += (g^2 - v)(1 - beta_2)
            denom = torch._foreach_sqrt(vs)
            torch._foreach_add_(denom, group["eps"])  # epsilon on the raw sqrt(v), Keras's placement
            torch._foreach_addcdiv_(params, ms, denom, value=-alpha)
        return loss


class KerasSGD(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-2, momentum=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mom = group["lr"], _f32(group["momentum"])  # Keras holds momentum in float32, as it does the betas
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if mom == 0:
                    p.sub_(g * lr)
                    continue
                state = self.state[p]
                if "m" not in state:
                    state["m"] = torch.zeros_like(p)
                m = state["m"]
                m.mul_(mom).sub_(g * lr)  # m = momentum * m - lr * g
                if group["nesterov"]:
                    p.add_(m * mom - g * lr)
                else:
                    p.add_(m)
        return loss


def make_optimizer(cfg: RunConfig, params, total_steps: int):
    """(optimizer, LambdaLR scheduler to be stepped once per optimizer step)."""
    if cfg.optimizer == "adam":
        if cfg.adam_impl == "torch":
            opt = torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta_1, cfg.beta_2), eps=cfg.epsilon, foreach=True)
        else:
            opt = KerasAdam(params, lr=cfg.lr, betas=(cfg.beta_1, cfg.beta_2), eps=cfg.epsilon)
    else:
        opt = KerasSGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    table = lr_table(cfg, total_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: table[min(s, len(table) - 1)] / cfg.lr)
    return opt, sched
