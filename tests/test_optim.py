"""FusedRMSprop gives torch.optim.RMSprop's results, state and state dict, in one fused kernel."""

import pytest
import torch

from vislab.train.optim import FusedRMSprop


def _params(seed: int, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(64, 49), (64,), (10, 64), (10,)]
    return [torch.nn.Parameter(torch.randn(s, generator=generator, dtype=dtype)) for s in shapes]


def _run(optimizer_cls, params, steps, seed=1, **kwargs):
    groups = [{"params": params[:2]}, {"params": params[2:], "lr": 3e-3}]
    opt = optimizer_cls(groups, lr=1e-3, alpha=0.9, eps=1e-7, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        for i, p in enumerate(params):
            # one parameter gets no gradient on odd steps: skipped, as in torch
            p.grad = None if (i == 1 and step % 2) else torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.01
        opt.step()
    return opt


@pytest.mark.parametrize("kwargs", [{}, {"weight_decay": 0.05}, {"maximize": True}])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_rmsprop_matches_torch(kwargs, dtype):
    ours, theirs = _params(0, dtype), _params(0, dtype)
    fused = _run(FusedRMSprop, ours, 25, **kwargs)
    reference = _run(torch.optim.RMSprop, theirs, 25, **kwargs)
    assert fused._scratch, "the fused kernel did not run"
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=tol, atol=tol)
        torch.testing.assert_close(fused.state[a]["square_avg"], reference.state[b]["square_avg"], rtol=tol, atol=tol)
        assert float(fused.state[a]["step"]) == float(reference.state[b]["step"])
    assert float(fused.state[ours[1]]["step"]) == 13  # skipped on the 12 odd steps


def test_fused_rmsprop_falls_back_where_it_cannot_fuse():
    ours, theirs = _params(0), _params(0)
    fused = _run(FusedRMSprop, ours, 10, momentum=0.9, centered=True)
    _run(torch.optim.RMSprop, theirs, 10, momentum=0.9, centered=True)
    assert not fused._scratch  # PyTorch's implementation ran
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach())


def test_fused_rmsprop_state_dict_is_torch_compatible():
    ours, theirs = _params(0), _params(0)
    fused = _run(FusedRMSprop, ours, 5)
    reference = _run(torch.optim.RMSprop, theirs, 5)
    # resume each from the other's state dict: both keep going in step
    swapped_ours = torch.optim.RMSprop([{"params": ours[:2]}, {"params": ours[2:]}], lr=1e-3)
    swapped_ours.load_state_dict(fused.state_dict())
    swapped_theirs = FusedRMSprop([{"params": theirs[:2]}, {"params": theirs[2:]}], lr=1e-3)
    swapped_theirs.load_state_dict(reference.state_dict())
    for p, q in zip(ours, theirs):
        g = torch.full_like(p, 0.02)
        p.grad, q.grad = g, g.clone()
    swapped_ours.step()
    swapped_theirs.step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-6)


def test_trainer_uses_fused_rmsprop():
    from vislab.core.config import resolve_config
    from vislab.train.loop import make_optimizer

    cfg = resolve_config(overrides={"train.optimizer": "rmsprop", "train.lr": 1e-3})
    opt = make_optimizer(_params(0), cfg)
    assert isinstance(opt, FusedRMSprop)
    assert opt.defaults["alpha"] == 0.9 and opt.defaults["eps"] == 1e-7  # Keras' rho and epsilon


class _KerasFormula(torch.optim.Optimizer):
    """keras.optimizers.RMSprop.update_step (Keras 3), transcribed: eps inside the square root."""

    def __init__(self, params, lr, alpha, eps, momentum=0.0, centered=False, weight_decay=0.0, maximize=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum, centered=centered,
                                      weight_decay=weight_decay, maximize=maximize))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = -p.grad if group["maximize"] else p.grad
                g = g + group["weight_decay"] * p
                state = self.state[p]
                if not state:
                    state.update(v=torch.zeros_like(p), avg=torch.zeros_like(p), mom=torch.zeros_like(p))
                rho = group["alpha"]
                state["v"] = rho * state["v"] + (1 - rho) * g * g
                if group["centered"]:
                    state["avg"] = rho * state["avg"] + (1 - rho) * g
                    denominator = state["v"] - state["avg"] ** 2 + group["eps"]
                else:
                    denominator = state["v"] + group["eps"]
                increment = group["lr"] * g / torch.sqrt(denominator)
                if group["momentum"] > 0:
                    state["mom"] = group["momentum"] * state["mom"] + increment
                    p -= state["mom"]
                else:
                    p -= increment


@pytest.mark.parametrize("kwargs", [{}, {"weight_decay": 0.05}, {"maximize": True}, {"momentum": 0.9},
                                    {"centered": True}])
def test_keras_rmsprop_puts_epsilon_inside_the_square_root(kwargs):
    from vislab.train.optim import KerasRMSprop, build_optimizer

    ours, theirs, torchs = _params(0, torch.float64), _params(0, torch.float64), _params(0, torch.float64)
    keras_like = _run(KerasRMSprop, ours, 25, **kwargs)
    formula = _run(_KerasFormula, theirs, 25, **kwargs)
    _run(torch.optim.RMSprop, torchs, 25, **kwargs)
    assert bool(keras_like._scratch) == (not kwargs.get("momentum") and not kwargs.get("centered"))  # fused path
    for a, b, c in zip(ours, theirs, torchs):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-10, atol=1e-10)
        # gradients of 0.01: eps=1e-7 inside or outside the root is a visible difference
        assert (a - c).abs().max() > 1e-6
        # the state dict holds the plain velocity (torch's square_avg), not velocity + eps
        torch.testing.assert_close(keras_like.state[a]["square_avg"], formula.state[b]["v"], rtol=1e-9, atol=1e-15)
    assert isinstance(build_optimizer([torch.nn.Parameter(torch.ones(1))], "rmsprop", 1e-3), KerasRMSprop)


def _conv_params(seed: int):
    """A conv weight in channels-last memory (as the Trainer converts models), a bias, a linear layer."""
    generator = torch.Generator().manual_seed(seed)
    conv = torch.randn(8, 3, 3, 3, generator=generator).contiguous(memory_format=torch.channels_last)
    return [torch.nn.Parameter(t) for t in (conv, torch.randn(8, generator=generator),
                                            torch.randn(10, 72, generator=generator), torch.randn(10, generator=generator))]


def _steps(opt, params, steps, seed):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = (torch.randn(p.shape, generator=generator) * 0.01).contiguous(
                memory_format=torch.channels_last if p.dim() == 4 else torch.contiguous_format)
        opt.step()


def test_kept_lists_share_one_buffer_and_step_as_the_formula():
    from vislab.train.optim import KerasRMSprop

    ours, theirs = _conv_params(0), _conv_params(0)
    opt = KerasRMSprop(ours, lr=1e-3, alpha=0.9, eps=1e-7)
    formula = _KerasFormula(theirs, lr=1e-3, alpha=0.9, eps=1e-7)
    _steps(opt, ours, 12, seed=3)
    _steps(formula, theirs, 12, seed=3)
    assert opt._packed, "the kept lists were not used"
    velocities = [opt.state[p]["square_avg"] for p in ours]
    assert len({v.untyped_storage().data_ptr() for v in velocities}) == 1  # one buffer, one add per step
    assert velocities[0].is_contiguous(memory_format=torch.channels_last)  # the parameter's own layout
    assert len({opt.state[p]["step"].untyped_storage().data_ptr() for p in ours}) == 1
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(opt.state[a]["square_avg"], formula.state[b]["v"], rtol=1e-5, atol=1e-12)
        assert float(opt.state[a]["step"]) == 12


def test_saved_and_loaded_state_resumes_exactly(tmp_path):
    """Exact resume: the state dict of the kept buffers, saved and loaded (weights_only), continues
    bit for bit as the uninterrupted optimiser does."""
    from vislab.train.optim import KerasRMSprop

    straight, resumed = _conv_params(0), _conv_params(0)
    opt = KerasRMSprop(straight, lr=1e-3, alpha=0.9, eps=1e-7)
    _steps(opt, straight, 6, seed=5)
    first = KerasRMSprop(resumed, lr=1e-3, alpha=0.9, eps=1e-7)
    _steps(first, resumed, 3, seed=5)
    torch.save(first.state_dict(), tmp_path / "state.pt")
    second = KerasRMSprop(resumed, lr=1e-3, alpha=0.9, eps=1e-7)
    second.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    _steps_from(second, resumed, 3, seed=5, skip=3)
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)
        assert torch.equal(opt.state[a]["square_avg"], second.state[b]["square_avg"])


def _steps_from(opt, params, steps, seed, skip):
    """:func:`_steps`' gradients from its step ``skip`` on."""
    generator = torch.Generator().manual_seed(seed)
    for index in range(skip + steps):
        grads = [(torch.randn(p.shape, generator=generator) * 0.01).contiguous(
            memory_format=torch.channels_last if p.dim() == 4 else torch.contiguous_format) for p in params]
        if index >= skip:
            for p, g in zip(params, grads):
                p.grad = g
            opt.step()


@pytest.mark.parametrize("name", ["rmsprop", "adam"])
def test_state_follows_a_change_of_memory_format(name):
    """The speed check may switch the model to channels-last after the first epoch: the fused kernels
    read memory in order, so the optimiser's moments must take their weights' new layout."""
    from vislab.train.optim import build_optimizer, follow_parameter_layout

    ours, theirs = _conv_params(0), _conv_params(0)
    for p in ours + theirs:  # start contiguous, as a model before the switch
        p.data = p.data.contiguous()
    opt = build_optimizer(ours, name, lr=1e-3)
    reference = _KerasFormula(theirs, lr=1e-3, alpha=0.9, eps=1e-7) if name == "rmsprop" else \
        torch.optim.Adam(theirs, lr=1e-3, foreach=False)
    generator = torch.Generator().manual_seed(7)
    for step in range(8):
        if step == 4:
            for p in ours:
                if p.dim() == 4:  # what model.to(memory_format=torch.channels_last) does
                    p.data = p.data.contiguous(memory_format=torch.channels_last)
            follow_parameter_layout(opt)
        for p, q in zip(ours, theirs):
            grad = torch.randn(p.shape, generator=generator) * 0.01
            # as autograd gives them: in the parameter's layout
            p.grad = grad.contiguous(memory_format=torch.channels_last) if step >= 4 and p.dim() == 4 else grad.clone()
            q.grad = grad.clone()
        opt.step()
        reference.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-7)
