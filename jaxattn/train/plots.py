"""Figures written to files: the training curves from ``metrics.jsonl`` (loss and accuracy against
step, train and validation), and the two functions every figure of the package and of the
experiments is made and saved with (:func:`pyplot`, :func:`save_figure`).

See docs/architecture.md#training-and-checkpointing.
"""

import os

from jaxattn.train.metrics import read_metrics


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend: figures go to files, so no display is needed
    (imported on first use, so that importing the training loop does not import matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str, *, dpi: int) -> None:
    """Writes ``figure`` to ``path`` and closes it (pyplot keeps every open figure alive)."""
    figure.savefig(path, dpi=dpi)
    pyplot().close(figure)


def plot_training_curves(workdir: str, filename: str = "curves.png") -> str:
    """Writes ``workdir/filename`` and returns its path."""
    records = read_metrics(workdir)
    figure, axes = pyplot().subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for split, style in (("train", "-"), ("validation", "o-")):
        rows = [r for r in records if r["split"] == split]
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        for axis, key in zip(axes, ("loss", "accuracy")):
            axis.plot(steps, [r[key] for r in rows], style, markersize=3, label=split)
    for split, marker in (("final_validation", "s"), ("final_test", "*")):
        for r in records:
            if r["split"] == split:
                for axis, key in zip(axes, ("loss", "accuracy")):
                    axis.plot([r["step"]], [r[key]], marker, markersize=8, label=split.replace("_", " "))
    for axis, key in zip(axes, ("loss", "accuracy")):
        axis.set_xlabel("step")
        axis.set_ylabel(key)
        axis.grid(alpha=0.3)
        axis.legend()
    axes[0].set_yscale("log")
    figure.suptitle(os.path.basename(os.path.normpath(workdir)))
    path = os.path.join(workdir, filename)
    save_figure(figure, path, dpi=120)
    return path
