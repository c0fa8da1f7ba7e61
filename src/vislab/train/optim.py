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

import sys

import torch
from torch.optim import optimizer as _torch_optimizer
from torch.optim.rmsprop import rmsprop as _torch_rmsprop


# --------------------------------------------------------------------------- no torch._dynamo at start-up
def _wrapper_code(decorate):
    """The code object of the closure ``decorate`` wraps a function in (None if it cannot be made)."""
    try:
        return decorate(lambda *args, **kwargs: None).__code__
    except Exception:  # a torch without that decorator: nothing to bypass
        return None


#: torch's two optimizer decorators whose first call imports ``torch._dynamo`` (2-3 s of a short
#: run's start-up on a 2-core CPU): ``@torch._disable_dynamo`` on ``add_param_group`` (so on
#: every optimizer's construction), ``zero_grad``, ``state_dict`` and ``load_state_dict``, and
#: ``_use_grad_for_differentiable`` on every ``step``.
_DYNAMO_WRAPPERS = tuple(code for code in (
    _wrapper_code(getattr(torch, "_disable_dynamo", None)),
    _wrapper_code(getattr(_torch_optimizer, "_use_grad_for_differentiable", None)),
) if code is not None)


def _eager(method):
    """``method`` without torch's dynamo-only wrapper while ``torch._dynamo`` is not imported.

    Outside ``torch.compile`` both wrappers reduce to calling the method (the step's sets grad
    mode to the group's ``differentiable``, done by the caller); and nothing can be compiling
    while ``torch._dynamo`` has not been imported. Once it has, the method runs as torch wraps it.
    """
    if "torch._dynamo" in sys.modules:
        return method
    function = method
    while getattr(function, "__code__", None) not in _DYNAMO_WRAPPERS:
        function = getattr(function, "__wrapped__", None)
        if function is None:
            return method  # not the structure expected: torch's own path
    return function.__wrapped__


class NoDynamoImport:
    """Mixin for a ``torch.optim.Optimizer`` subclass: building and stepping it does not import ``torch._dynamo``.

    The same methods run, minus their ``torch.compile`` guards while nothing can be compiled
    (see :func:`_eager`); the state dict, hooks and results are torch's.

    Example:
        >>> class MyAdagrad(NoDynamoImport, torch.optim.Adagrad):
        ...     pass
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> opt = MyAdagrad([w], lr=0.5); w.grad = torch.ones(2); opt.step()
        >>> w.tolist()
        [0.5, 0.5]
    """

    def add_param_group(self, param_group) -> None:
        _eager(torch.optim.Optimizer.add_param_group)(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _eager(torch.optim.Optimizer.zero_grad)(self, set_to_none)

    def state_dict(self):
        return _eager(torch.optim.Optimizer.state_dict)(self)

    def load_state_dict(self, state_dict) -> None:
        _eager(torch.optim.Optimizer.load_state_dict)(self, state_dict)

    def step(self, closure=None):
        mro = type(self).__mro__
        base = next(c for c in mro[mro.index(NoDynamoImport) + 1:] if "step" in vars(c))
        method = vars(base)["step"]
        while getattr(method, "hooked", False):  # torch's step-hook wrapper: this class's runs the hooks
            method = method.__wrapped__
        eager = _eager(method)
        if eager is method:
            return method(self, closure)
        with torch.set_grad_enabled(bool(self.defaults.get("differentiable", False))):
            return eager(self, closure)


class Adam(NoDynamoImport, torch.optim.Adam):
    """``torch.optim.Adam`` whose construction and step do not import ``torch._dynamo``."""


class AdamW(NoDynamoImport, torch.optim.AdamW):
    """``torch.optim.AdamW`` whose construction and step do not import ``torch._dynamo``."""


class SGD(NoDynamoImport, torch.optim.SGD):
    """``torch.optim.SGD`` whose construction and step do not import ``torch._dynamo``."""


class LBFGS(NoDynamoImport, torch.optim.LBFGS):
    """``torch.optim.LBFGS`` whose construction does not import ``torch._dynamo`` (its step never did)."""


class FusedRMSprop(NoDynamoImport, torch.optim.RMSprop):
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
        self._packed: dict[int, _Packed] = {}  # id(group) -> its lists between steps

    @staticmethod
    def _fusable(group: dict, params: list[torch.Tensor]) -> bool:
        return (group["momentum"] == 0 and not group["centered"] and 0.0 <= group["alpha"] < 1.0
                and all(p.device.type == "cpu" and p.dtype in (torch.float32, torch.float64, torch.bfloat16)
                        and p.grad.dtype == p.dtype and not p.grad.is_sparse for p in params)
                and len({p.dtype for p in params}) == 1)

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self._packed.clear()  # new state tensors: packed again at the next step

    def step(self, closure=None):
        if any(group["differentiable"] or group["capturable"] for group in self.param_groups):
            return super().step(closure)  # torch.optim.RMSprop's, which manages grad mode for these
        return self._step(closure)

    @torch.no_grad()
    def _step(self, closure):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            packed = self._packed.get(id(group))
            if packed is not None and packed.fits(group):
                grads = [p.grad for p in packed.params]
                if not any(g is None for g in grads):
                    packed.count_step()
                    self._fused_step(group, packed.params, grads, packed.square_avgs, packed.scratch, packed.flat)
                    continue
            self._collected_step(group)
        return loss

    def _collected_step(self, group: dict) -> None:
        """One step of ``group`` from torch's per-step lists; where every parameter had a gradient and
        the step fused, the lists are kept (:class:`_Packed`) and the next steps skip this."""
        has_complex, params, grads, square_avgs, grad_avgs, momentum_buffers, steps = _collect(self, group)
        if not params:
            return
        if has_complex or not self._fusable(group, params) or not self._fuses(group):
            self._unfused_step(group, params, grads, square_avgs, grad_avgs, momentum_buffers, steps, has_complex)
            return
        torch._foreach_add_(steps, 1)  # the step count torch's RMSprop keeps
        scratch = [self._scratch_for(p) for p in params]
        self._fused_step(group, params, grads, square_avgs, scratch, None)
        if len(params) == len(group["params"]):
            self._packed[id(group)] = _Packed(self, group, params, square_avgs, steps, scratch)

    def _fuses(self, group: dict) -> bool:
        return True

    def _unfused_step(self, group, params, grads, square_avgs, grad_avgs, momentum_buffers, steps, has_complex):
        _torch_rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffers, steps,
                       lr=group["lr"], alpha=group["alpha"], eps=group["eps"],
                       weight_decay=group["weight_decay"], momentum=group["momentum"],
                       centered=group["centered"], foreach=group["foreach"], maximize=group["maximize"],
                       differentiable=group["differentiable"], capturable=group["capturable"],
                       has_complex=has_complex)

    def _fused_step(self, group, params, grads, square_avgs, scratch, flat, eps=None) -> None:
        """The kernel: ``square_avgs`` updated, ``params`` stepped. ``flat``: one tensor whose memory
        holds every square_avg (or None)."""
        torch._fused_adam_(params, grads, scratch, square_avgs, [], [self._infinite_step] * len(params),
                           lr=float(group["lr"]), beta1=0.0, beta2=float(group["alpha"]),
                           weight_decay=float(group["weight_decay"]),
                           eps=float(group["eps"]) if eps is None else eps,
                           amsgrad=False, maximize=bool(group["maximize"]), grad_scale=None, found_inf=None)

    def _scratch_for(self, param: torch.Tensor) -> torch.Tensor:
        buffer = self._scratch.get(param)
        if buffer is None or buffer.shape != param.shape or buffer.dtype != param.dtype:
            # zeros, not empty: the kernel reads it (times beta1 = 0), and 0 * NaN would be NaN
            buffer = self._scratch[param] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return buffer


class _Packed:
    """A fused group's lists, kept between steps, with each kind of state in one buffer.

    Collecting the lists and checking them took about as long as the kernel for a small
    network (``bench_step_costs.py``'s rmsprop row). The state tensors (``square_avg``,
    ``step``) become views of one buffer each, with their own shapes and strides, so one
    in-place op updates all of them; the state dict holds the same values and shapes as
    before. Kept while the group keeps its parameter list and settings and every parameter has
    a gradient; rebuilt after ``load_state_dict``.
    """

    __slots__ = ("group_params", "settings", "params", "square_avgs", "scratch", "steps", "flat", "flat_steps")

    def __init__(self, optimizer, group, params, square_avgs, steps, scratch):
        self.group_params, self.settings = group["params"], _settings(group)
        self.params, self.scratch = params, scratch
        self.flat, self.square_avgs = _one_buffer(square_avgs)
        self.flat_steps, self.steps = _one_buffer(steps)
        for param, square_avg, step in zip(params, self.square_avgs, self.steps):
            optimizer.state[param]["square_avg"], optimizer.state[param]["step"] = square_avg, step

    def fits(self, group: dict) -> bool:
        return group["params"] is self.group_params and len(self.params) == len(self.group_params) \
            and _settings(group) == self.settings

    def count_step(self) -> None:
        _add(self.flat_steps, self.steps, 1)


def _settings(group: dict) -> tuple:
    """What decides whether a group's step fuses (its rate and decay may change between steps)."""
    return group["momentum"], group["centered"], group["alpha"], group["differentiable"], group["capturable"]


def _one_buffer(tensors: list[torch.Tensor]) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
    """(buffer, views): ``tensors``' values copied into one buffer, as views with their shapes and strides
    (each starting at a 64-byte boundary); (None, tensors) where a tensor's memory has gaps or the
    dtypes or devices differ."""
    if not tensors or len({(t.dtype, t.device) for t in tensors}) != 1 or not all(map(_dense, tensors)):
        return None, tensors
    align = max(1, 64 // tensors[0].element_size())
    offsets, total = [], 0
    for tensor in tensors:
        offsets.append(total)
        total += -(-tensor.numel() // align) * align
    buffer = torch.zeros(total, dtype=tensors[0].dtype, device=tensors[0].device)
    views = []
    for tensor, offset in zip(tensors, offsets):
        view = buffer.as_strided(tensor.shape, tensor.stride(), offset)
        view.copy_(tensor)
        views.append(view)
    return buffer, views


def _dense(tensor: torch.Tensor) -> bool:
    """Its elements fill exactly ``numel`` consecutive slots (contiguous, or channels-last)."""
    return tensor.is_contiguous() or (tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last)) \
        or (tensor.dim() == 5 and tensor.is_contiguous(memory_format=torch.channels_last_3d))


class KerasRMSprop(FusedRMSprop):
    """RMSprop as Keras computes it: epsilon *inside* the square root.

    Keras (``keras.optimizers.RMSprop``, Keras 3 / tf.keras in TF 2.16 on) updates
    ``var -= lr * g / sqrt(velocity + epsilon)``; PyTorch divides by ``sqrt(velocity) +
    eps``. With Keras' ``epsilon=1e-7`` the two differ most where it matters for the
    seeds: a weight whose gradients are still tiny takes a step of at most ``lr * g /
    sqrt(1e-7)`` in Keras, but about ``lr / sqrt(1 - rho)`` (3x ``lr``) in PyTorch, whatever
    the gradient's size.

    The same fused CPU kernel runs: with ``eps = 0`` it divides by ``sqrt(alpha * s + (1 -
    alpha) * g**2)``, so ``s`` enters it as ``velocity + epsilon / alpha`` (one in-place
    add before) and leaves as ``velocity_new + epsilon`` (one subtract after): the state
    dict keeps the plain velocity, as ``torch.optim.RMSprop``'s ``square_avg``. Other
    groups (momentum, centred, non-CPU) run the same formula element-wise.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> opt = KerasRMSprop([w], lr=0.1, alpha=0.9, eps=1e-7)
        >>> w.grad = torch.tensor([1.0, 1e-6]); opt.step()
        >>> [round(v, 4) for v in w.tolist()]   # the tiny gradient: a tiny step (PyTorch's: to 0.7597)
        [0.6838, 0.9997]
    """

    def _fuses(self, group: dict) -> bool:
        return float(group["alpha"]) != 0.0

    def _unfused_step(self, group, params, grads, square_avgs, grad_avgs, momentum_buffers, steps, has_complex):
        torch._foreach_add_(steps, 1)
        self._keras_step(group, params, grads, square_avgs, grad_avgs, momentum_buffers)

    def _fused_step(self, group, params, grads, square_avgs, scratch, flat, eps=None) -> None:
        eps, alpha = float(group["eps"]), float(group["alpha"])
        _add(flat, square_avgs, eps / alpha)
        super()._fused_step(group, params, grads, square_avgs, scratch, flat, eps=0.0)
        _add(flat, square_avgs, -eps)

    @staticmethod
    def _keras_step(group, params, grads, square_avgs, grad_avgs, momentum_buffers) -> None:
        alpha, eps, lr, momentum = group["alpha"], group["eps"], group["lr"], group["momentum"]
        for i, (param, grad, velocity) in enumerate(zip(params, grads, square_avgs)):
            grad = -grad if group["maximize"] else grad
            if group["weight_decay"]:
                grad = grad.add(param, alpha=group["weight_decay"])
            velocity.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
            if group["centered"]:
                average = grad_avgs[i].mul_(alpha).add_(grad, alpha=1 - alpha)
                denominator = velocity.addcmul(average, average, value=-1).add_(eps).sqrt_()
            else:
                denominator = velocity.add(eps).sqrt_()
            if momentum > 0:
                buffer = momentum_buffers[i]
                buffer.mul_(momentum).addcdiv_(grad, denominator)
                param.add_(buffer, alpha=-lr)
            else:
                param.addcdiv_(grad, denominator, value=-lr)


def follow_parameter_layout(optimizer: torch.optim.Optimizer) -> None:
    """After the parameters changed memory format in place (``model.to(memory_format=...)``): each
    state tensor shaped like its parameter takes the parameter's strides, values unchanged.

    The fused CPU kernels (Adam, AdamW, :class:`FusedRMSprop`) walk parameter, gradient and
    state in memory order, so a state tensor in another layout would pair each weight with
    another weight's moments, silently.

    Example:
        >>> w = torch.nn.Parameter(torch.randn(2, 3, 2, 2))
        >>> opt = KerasRMSprop([w]); w.grad = torch.ones_like(w); opt.step()
        >>> w.data = w.data.contiguous(memory_format=torch.channels_last)
        >>> follow_parameter_layout(opt)
        >>> opt.state[w]["square_avg"].stride() == w.stride()
        True
    """
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param)
            for key, value in (state or {}).items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_strided(param.shape, param.stride(), dtype=value.dtype,
                                                     device=value.device).copy_(value)
    packed = getattr(optimizer, "_packed", None)
    if packed is not None:
        packed.clear()  # their views had the old strides


# --------------------------------------------------------------------------- factories
def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    """The optimiser ``cfg.train`` names, over ``params`` (tensors or param-group dicts)."""
    t = cfg.train
    return build_optimizer(params, t.optimizer, t.lr, t.weight_decay, t.momentum, t.nesterov)


def build_optimizer(params, name: str, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                    nesterov: bool = False) -> torch.optim.Optimizer:
    """One factory for every optimiser vislab builds (the Trainer's and the cached-feature head's).

    Example:
        >>> opt = build_optimizer(torch.nn.Linear(2, 1).parameters(), "sgd", lr=0.1)
        >>> type(opt).__name__, opt.param_groups[0]["momentum"]
        ('SGD', 0.9)
    """
    params = list(params)
    if name == "lbfgs":
        # full batch on cached features (config.validate checks): multinomial logistic regression.
        # One param group of the trainable head; the strong-Wolfe line search sets the step (lr=1).
        from vislab.train.features import LBFGS_ITERATIONS_PER_EPOCH

        trainable = [p for p in _flat(params) if p.requires_grad]
        return LBFGS(trainable, lr=1.0, max_iter=LBFGS_ITERATIONS_PER_EPOCH, history_size=20,
                                 line_search_fn="strong_wolfe")
    if name in ("adam", "adamw"):
        # fused: one kernel per step for all parameters (CPU and CUDA) instead of a chain of
        # element-wise ops per parameter
        cls = Adam if name == "adam" else AdamW
        return cls(params, lr=lr, weight_decay=weight_decay, fused=_can_fuse(params))
    if name == "sgd":
        return SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                               weight_decay=weight_decay)
    # Keras RMSprop: rho=0.9, epsilon=1e-7 inside the square root, in one fused kernel on the CPU
    return KerasRMSprop(params, lr=lr, alpha=0.9, eps=1e-7, momentum=0.0, weight_decay=weight_decay)


def _flat(params) -> list[torch.Tensor]:
    """The tensors of a parameter list or of a list of param-group dicts."""
    return [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]


def _can_fuse(params) -> bool:
    tensors = _flat(params)
    return bool(tensors) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors)


def make_scheduler(optimizer, cfg, steps_per_epoch: int):
    """Returns (scheduler, step_per_batch)."""
    t = cfg.train
    total = t.epochs * steps_per_epoch
    warmup = min(int(round(t.warmup_epochs * steps_per_epoch)), max(0, total - 1))
    if warmup:
        return _warmup_then(optimizer, t.scheduler, warmup, total), True
    if t.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total)), True
    if t.scheduler == "onecycle":
        if total < 3:  # one-cycle needs a step up and a step down: a run this short keeps its rate
            return None, False
        max_lr = [g["lr"] for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total,
                                                   pct_start=_ramp(0.25, total), anneal_strategy="linear",
                                                   div_factor=10.0, final_div_factor=100.0), True
    if t.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, t.epochs // 3), gamma=0.1), False
    if t.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.2, patience=2), False
    return None, False


def _ramp(pct: float, total: int) -> float:
    """One-cycle's rising share of ``total`` steps, at least 1.5 steps and short of the last (torch's
    OneCycleLR divides by the rising phase's length, zero when ``pct * total`` is 1).

    Example:
        >>> _ramp(0.25, 4), _ramp(0.25, 100)
        (0.375, 0.25)
    """
    return min(max(pct, 1.5 / total), (total - 1.5) / total)


def _warmup_then(optimizer, scheduler: str, warmup: int, total: int):
    """Linear warm-up from lr/100 over ``warmup`` steps, then cosine to 0, one-cycle's anneal, or constant."""
    sched = torch.optim.lr_scheduler
    if scheduler == "onecycle" and total >= 3:  # one-cycle has its own ramp: the warm-up sets its length
        max_lr = [g["lr"] for g in optimizer.param_groups]
        return sched.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total, pct_start=_ramp(warmup / total, total),
                                anneal_strategy="cos", div_factor=100.0, final_div_factor=100.0)
    warm = sched.LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=warmup)
    if scheduler == "cosine":
        after = sched.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
    else:
        after = sched.LambdaLR(optimizer, lambda _: 1.0)
    return sched.SequentialLR(optimizer, [warm, after], milestones=[warmup])


def _add(flat: torch.Tensor | None, tensors: list[torch.Tensor], value: float) -> None:
    """``value`` added to every tensor: one op on their common buffer where they have one."""
    if flat is not None:
        flat.add_(value)
    else:
        torch._foreach_add_(tensors, value)


def _collect(optimizer: torch.optim.RMSprop, group: dict):
    """RMSprop's per-group state lists, as ``torch.optim.RMSprop._init_group`` fills them (both
    optimisers above step from them): has_complex, params, grads, square_avgs, grad_avgs,
    momentum_buffers, steps."""
    params, grads, square_avgs, grad_avgs, momentum_buffers, steps = [], [], [], [], [], []
    has_complex = optimizer._init_group(group, params, grads, square_avgs, momentum_buffers, grad_avgs, steps)
    return has_complex, params, grads, square_avgs, grad_avgs, momentum_buffers, steps
