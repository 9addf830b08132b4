"""An experiment's result files: ``NAME.json``, ``NAME.md`` and ``NAME.png`` in one directory, and the
figures behind the PNGs."""

import json
import os
from collections.abc import Callable


def write_outputs(result: dict, out_dir: str, name: str, markdown: Callable[[dict, str], None],
                  plot: Callable[[dict, str], None]) -> None:
    """Writes ``result`` as JSON, ``markdown(result, path)`` and ``plot(result, path)``, then prints the markdown."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    with open(f"{path}.json", "w") as f:
        json.dump(result, f, indent=2)
    markdown(result, f"{path}.md")
    plot(result, f"{path}.png")
    with open(f"{path}.md") as f:
        print(f.read())


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend: figures go to files, so no display is needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str, *, dpi: int) -> None:
    """Writes ``figure`` to ``path`` and closes it (pyplot keeps every open figure alive)."""
    figure.savefig(path, dpi=dpi)
    pyplot().close(figure)
