"""RMSprop in one fused kernel per step on the CPU.

``torch.optim.RMSprop`` has no fused implementation: each step runs five element-wise
passes per parameter (decay, square-accumulate, an allocating ``sqrt``, ``add eps``,
``addcdiv``). For the seeds' MLP (535k parameters, batch 128) that was about a third of
a training step. PyTorch's fused Adam kernel computes, with ``beta1 = 0``, ``beta2 =
alpha`` and a step count of infinity (both bias corrections become exactly 1):

    exp_avg    = grad                                   (scratch, not state)
    square_avg = alpha * square_avg + (1 - alpha) * grad**2
    param     -= lr * grad / (sqrt(square_avg) + eps)

which is RMSprop without momentum or centring, L2 weight decay and ``maximize``
included, in one pass. :class:`FusedRMSprop` takes the same arguments and keeps the same
state (``step``, ``square_avg``) as ``torch.optim.RMSprop``, so its state dict loads into
either; groups it cannot fuse (momentum, centred, capturable, differentiable, complex or
non-CPU parameters, ``alpha`` outside [0, 1)) run PyTorch's own implementation.
``python benchmarks/bench_step_costs.py`` times both.
"""

from __future__ import annotations

import torch
from torch.optim.rmsprop import rmsprop as _torch_rmsprop


class FusedRMSprop(torch.optim.RMSprop):
    """``torch.optim.RMSprop`` with the same results (to float rounding) and one fused CPU kernel per step.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(3))
        >>> opt = FusedRMSprop([w], lr=0.1, alpha=0.9, eps=1e-7)
        >>> w.grad = torch.tensor([1.0, -1.0, 0.0]); opt.step()
        >>> [round(v, 4) for v in w.tolist()]   # first step: lr * g / sqrt(0.1 * g**2)
        [0.6838, 1.3162, 1.0]
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._scratch: dict[torch.Tensor, torch.Tensor] = {}  # the kernel's exp_avg output; not state
        self._infinite_step = torch.tensor(float("inf"))  # bias corrections 1 - beta**inf == 1

    @staticmethod
    def _fusable(group: dict, params: list[torch.Tensor]) -> bool:
        return (group["momentum"] == 0 and not group["centered"] and 0.0 <= group["alpha"] < 1.0
                and all(p.device.type == "cpu" and p.dtype in (torch.float32, torch.float64, torch.bfloat16)
                        and p.grad.dtype == p.dtype and not p.grad.is_sparse for p in params)
                and len({p.dtype for p in params}) == 1)

    def step(self, closure=None):
        if any(group["differentiable"] or group["capturable"] for group in self.param_groups):
            return super().step(closure)  # PyTorch's own, which manages grad mode for these
        return self._step(closure)

    @torch.no_grad()
    def _step(self, closure):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[torch.Tensor] = []
            grads: list[torch.Tensor] = []
            square_avgs: list[torch.Tensor] = []
            grad_avgs: list[torch.Tensor] = []
            momentum_buffers: list[torch.Tensor] = []
            steps: list[torch.Tensor] = []
            has_complex = self._init_group(group, params, grads, square_avgs, momentum_buffers, grad_avgs, steps)
            if not params:
                continue
            if has_complex or not self._fusable(group, params):
                _torch_rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffers, steps,
                               lr=group["lr"], alpha=group["alpha"], eps=group["eps"],
                               weight_decay=group["weight_decay"], momentum=group["momentum"],
                               centered=group["centered"], foreach=group["foreach"], maximize=group["maximize"],
                               differentiable=group["differentiable"], capturable=group["capturable"],
                               has_complex=has_complex)
                continue
            torch._foreach_add_(steps, 1)  # the step count torch's RMSprop keeps
            scratch = [self._scratch_for(p) for p in params]
            torch._fused_adam_(params, grads, scratch, square_avgs, [], [self._infinite_step] * len(params),
                               lr=float(group["lr"]), beta1=0.0, beta2=float(group["alpha"]),
                               weight_decay=float(group["weight_decay"]), eps=float(group["eps"]),
                               amsgrad=False, maximize=bool(group["maximize"]), grad_scale=None, found_inf=None)
        return loss

    def _scratch_for(self, param: torch.Tensor) -> torch.Tensor:
        buffer = self._scratch.get(param)
        if buffer is None or buffer.shape != param.shape or buffer.dtype != param.dtype:
            # zeros, not empty: the kernel reads it (times beta1 = 0), and 0 * NaN would be NaN
            buffer = self._scratch[param] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return buffer
