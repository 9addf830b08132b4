"""An experiment's result files: ``NAME.json``, ``NAME.md`` and ``NAME.png`` in one directory (the
figures are made and saved with :mod:`jaxattn.train.plots`)."""

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
