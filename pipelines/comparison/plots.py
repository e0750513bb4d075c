"""The comparison report's figures (reports/comparison/*.png), drawn from what the sections computed."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from common import REPORTS  # noqa: E402
from comparison.tables import Stat  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from lofit.io import atomic_path  # noqa: E402

PLOTS = REPORTS / "comparison"
OPTIONAL_PLOTS = ("head_swap.png", "k_sweep.png", "data_efficiency.png")  # absent when their section is not configured


def save(figure: plt.Figure, name: str) -> None:
    figure.tight_layout()
    with atomic_path(PLOTS / name) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)


def drop_optional() -> None:
    """A section (or a frontier run) no longer configured leaves no stale plot."""
    for name in OPTIONAL_PLOTS:
        (PLOTS / name).unlink(missing_ok=True)
    for path in PLOTS.glob("frontier-*.png"):
        path.unlink()


def plot_points(axis: plt.Axes, points: dict[float, Stat], **style: Any) -> None:
    xs = sorted(points)
    axis.errorbar(xs, [100 * points[x]["mean"] for x in xs], yerr=[100 * points[x].get("sd", 0) for x in xs],
                  marker="o", capsize=3, **style)


def run_panels(runs: list[str]) -> tuple[plt.Figure, list[plt.Axes]]:
    """One plot panel per run, side by side."""
    figure, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.5), squeeze=False)
    return figure, list(axes[0])


def head_swap(runs: list[str], matrix: list[list[float]]) -> None:
    """Heat map: rows = trained and evaluated on, columns = heads selected on (% primary metric)."""
    figure, axis = plt.subplots(figsize=(1.6 * len(runs) + 2.5, 1.2 * len(runs) + 1.5))
    image = axis.imshow(matrix, cmap="viridis")
    middle = (min(map(min, matrix)) + max(map(max, matrix))) / 2
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            axis.text(j, i, f"{value:.1f}", ha="center", va="center", color="w" if value < middle else "k")
    axis.set(xticks=range(len(runs)), xticklabels=runs, yticks=range(len(runs)), yticklabels=runs,
             xlabel="heads selected on", ylabel="trained and evaluated on", title="head swap (% primary metric)")
    figure.colorbar(image, ax=axis)
    save(figure, "head_swap.png")


def k_sweep(panels: list[tuple[str, str, dict[int, Stat], tuple[int, Stat], Stat]]) -> None:
    """Per run (run, metric label, LoFiT by K, (K, stat) of the main run, base): the metric by K."""
    figure, axes = run_panels([run for run, *_ in panels])
    for (run, label, by_k, (k_main, main), base), axis in zip(panels, axes):
        plot_points(axis, by_k, label="LoFiT")
        axis.errorbar(k_main, 100 * main["mean"], yerr=100 * main.get("sd", 0),
                      fmt="r*", markersize=12, capsize=3, label="main run")
        axis.axhline(100 * base["mean"], color="gray", linestyle="--", label="base")
        axis.set(title=run, xlabel="heads (K)", ylabel=f"{label} (%)")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.legend(fontsize=7)
    save(figure, "k_sweep.png")


def data_efficiency(panels: list[tuple[str, str, dict[str, dict[int, Stat]], list[int]]]) -> None:
    """Per run (run, metric label, method → metric by training size, sizes): one curve per method."""
    figure, axes = run_panels([run for run, *_ in panels])
    for (run, label, curves, sizes), axis in zip(panels, axes):
        for method, curve in curves.items():
            plot_points(axis, curve, label=method)
        axis.set(title=run, xlabel="training examples", ylabel=f"{label} (%)", xscale="log")
        axis.set_xticks(sizes, [str(n) for n in sizes])
        axis.minorticks_off()
        axis.legend(fontsize=7)
    save(figure, "data_efficiency.png")


def head_layers(counts: dict[str, list[int]]) -> None:
    """Per run, how many of its top-K step-1 heads sit in each layer."""
    layers = max(len(per_layer) for per_layer in counts.values())
    figure, axes = plt.subplots(len(counts), 1, figsize=(7, 1.2 * len(counts) + 1), sharex=True, squeeze=False)
    for (run, per_layer), axis in zip(counts.items(), axes[:, 0]):
        axis.bar(range(layers), per_layer)
        axis.set_ylabel(run, rotation=0, ha="right", fontsize=8)
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1, 0].set_xlabel("layer")
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle("layers of the top-K step-1 heads")
    save(figure, "head_layers.png")


def frontier(run: str, label: str, points: dict[str, tuple[int, Stat]], base: Stat) -> str:
    """One run's parameter-efficiency frontier: each method's test metric with its 95 % interval
    against its parameter count (log x), the K sweep as one line, the val-chosen LoFiT as a star,
    base as a dashed line. Writes frontier-RUN.png and returns its name."""
    figure, axis = plt.subplots(figsize=(6.5, 4))
    sweep = sorted((params, s) for name, (params, s) in points.items() if name.startswith("LoFiT K="))
    if sweep:
        axis.plot([p for p, _ in sweep], [100 * s["mean"] for _, s in sweep], color="tab:blue", alpha=0.4, linestyle=":")
    markers = iter("osD^vP<>Xh")
    for name, (params, s) in points.items():
        chosen = "chosen on val" in name
        axis.errorbar(params, 100 * s["mean"], yerr=[[100 * (s["mean"] - s["low"])], [100 * (s["high"] - s["mean"])]],
                      fmt="*" if chosen else next(markers, "o"), markersize=14 if chosen else 6, capsize=3,
                      color="red" if chosen else None, label=name)
    axis.axhline(100 * base["mean"], color="gray", linestyle="--", label="base")
    axis.set(title=f"{run}: {label} vs parameters", xlabel="trainable / edited parameters (log)",
             ylabel=f"test {label} (%) [95 % CI]", xscale="log")
    axis.legend(fontsize=6, loc="best")
    name = f"frontier-{run}.png"
    save(figure, name)
    return name
