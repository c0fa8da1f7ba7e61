"""The tutorials' warm-up: one neuron, ``nn.Linear(1, 1)``, fitted by gradient descent, checked against least squares.

    python examples/linear_regression.py          # California housing: average rooms -> median house value
    python examples/linear_regression.py --smoke  # scikit-learn's shipped diabetes set: BMI -> disease progression

The tutorials fit Boston housing's average rooms per dwelling to the price. Boston housing is gone from
scikit-learn (removed in 1.2), so full mode downloads California housing (``fetch_california_housing``:
``AveRooms`` -> ``MedHouseVal``, in $100,000) and, offline, falls back to the shipped diabetes set
(``bmi`` -> one-year disease progression), saying which it used; smoke mode uses diabetes directly.

The neuron is trained on standardised x and y (full-batch gradient descent written out, lr 0.1, MSE, 300 steps:
on standardised data each step shrinks the error by a constant factor, 0.8), then its weight and bias are
mapped back to the data's units and compared with the closed-form least-squares line
(``numpy.linalg.lstsq`` on [x, 1]). Figures: OUT/loss.png (the loss per step) and OUT/fit.png (the fitted
line and the least-squares line over the scatter).

Expected, full mode (not measured by us: this machine is offline): the two lines agree to float32 precision,
as in smoke mode.

Measured, smoke mode (diabetes, 442 patients; AMD EPYC (lscpu), 2 cores, torch 2.14.1, 2026-12-02): gradient
descent weight 10.2331, bias -117.773, least squares the same (relative differences 1.6e-7 and 3.8e-7, R^2
0.344); about 6 s wall under nice on the otherwise idle machine. Floor checked: weight and bias within a
relative 1e-4 of least squares.
"""

from __future__ import annotations

import numpy as np

from _common import Checks, get_args_parser, run, start

TOLERANCE = 1e-4  # relative: |gd - lstsq| <= TOLERANCE * max(1, |lstsq|)


def load_data(smoke: bool):
    """(x, y, description): California housing's AveRooms -> MedHouseVal, else diabetes' BMI -> progression."""
    from sklearn.datasets import fetch_california_housing, load_diabetes

    if not smoke:
        try:
            housing = fetch_california_housing()
            x = housing.data[:, housing.feature_names.index("AveRooms")]
            return x, housing.target, "California housing: AveRooms -> MedHouseVal ($100,000)"
        except OSError as exc:  # offline: urllib's URLError is an OSError
            print(f"California housing could not be downloaded ({exc}); using the shipped diabetes set instead")
    diabetes = load_diabetes(scaled=False)
    x = diabetes.data[:, diabetes.feature_names.index("bmi")]
    return x, diabetes.target, "diabetes: BMI -> disease progression after one year"


def fit_neuron(x: np.ndarray, y: np.ndarray, steps: int = 300, lr: float = 0.1):
    """nn.Linear(1, 1) by full-batch gradient descent on standardised data; (weight, bias) in the data's units."""
    import torch

    torch.manual_seed(0)
    neuron = torch.nn.Linear(1, 1)
    mx, sx, my, sy = x.mean(), x.std(), y.mean(), y.std()
    inputs = torch.tensor((x - mx) / sx, dtype=torch.float32)[:, None]
    targets = torch.tensor((y - my) / sy, dtype=torch.float32)[:, None]
    history = []
    for step in range(steps):
        loss = torch.nn.functional.mse_loss(neuron(inputs), targets)
        neuron.zero_grad()
        loss.backward()
        with torch.no_grad():  # one gradient-descent step: what torch.optim.SGD(lr=lr) does
            for parameter in neuron.parameters():
                parameter -= lr * parameter.grad
        history.append({"epoch": step + 1, "train_loss": loss.item()})
    w, b = neuron.weight.item(), neuron.bias.item()
    weight = sy * w / sx  # y = sy * (w * (x - mx) / sx + b) + my
    return weight, my + sy * b - weight * mx, history


def main(argv=None) -> None:
    args = get_args_parser(__doc__, "linear_regression").parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from vislab.viz.training import plot_history

    out = start(args, "linear regression with one neuron")
    x, y, description = load_data(args.smoke)
    print(f"data: {description}, {len(x)} rows")
    weight, bias, history = fit_neuron(x, y)
    (ls_weight, ls_bias), *_ = np.linalg.lstsq(np.stack([x, np.ones_like(x)], 1), y, rcond=None)
    r2 = 1 - np.sum((y - (ls_weight * x + ls_bias)) ** 2) / np.sum((y - y.mean()) ** 2)
    print(f"gradient descent: weight {weight:.6g}, bias {bias:.6g} "
          f"(final standardised MSE {history[-1]['train_loss']:.6f})")
    print(f"least squares:    weight {ls_weight:.6g}, bias {ls_bias:.6g} (R^2 {r2:.4f})")

    plot_history(history, out / "loss.png", metrics=())
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(x, y, s=6, alpha=0.3, label="data")
    line = np.linspace(x.min(), x.max(), 2)
    ax.plot(line, weight * line + bias, "r-", lw=2, label="nn.Linear(1, 1), gradient descent")
    ax.plot(line, ls_weight * line + ls_bias, "k--", lw=1, label="least squares")
    name, _, variables = description.partition(": ")
    ax.set_xlabel(variables.split(" -> ")[0])
    ax.set_ylabel(variables.split(" -> ")[1])
    ax.set_title(name)
    ax.legend()
    fig.savefig(out / "fit.png", dpi=100)
    print(f"wrote {out / 'loss.png'} and {out / 'fit.png'}")

    checks = Checks()
    checks.at_most("|weight - least squares| / max(1, |least squares|)",
                   abs(weight - ls_weight) / max(1.0, abs(ls_weight)), TOLERANCE)
    checks.at_most("|bias - least squares| / max(1, |least squares|)", abs(bias - ls_bias) / max(1.0, abs(ls_bias)),
                   TOLERANCE)
    checks.verify()


if __name__ == "__main__":
    run(main)
