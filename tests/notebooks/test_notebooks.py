"""Every notebook in ``notebooks/`` runs top to bottom in a real Jupyter kernel, and a failing cell fails the suite.

The notebooks are jupytext percent-format sources (``notebooks/*.py``, ``# %%`` cells); each is
converted to a notebook and executed by ``nbclient`` in an ``ipykernel`` kernel, so notebook
semantics hold (a fresh namespace, cell by cell, rich output). The kernel:

* runs this interpreter (``sys.executable``), through a kernelspec written for the test, so that a
  ``python3`` kernelspec elsewhere on the machine (another virtualenv's) is never picked up;
* starts in the repository root with ``MPLBACKEND=Agg`` (figures render headless) and one CPU
  device: the suite's 8 fake devices are for the sharding tests, and a reader opening a notebook on
  a laptop has one;
* has ``TMPDIR`` in the test's temporary directory, so the work directories the notebooks make with
  ``tempfile`` go when pytest cleans up.
"""

import json
import os
import pathlib
import re
import sys

import jupytext
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.xla_flags import xla_flags

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
# In reading order (the quick tier runs the first one only: the cheapest); any other notebook after them.
READING_ORDER = ("mixers", "ops_impls", "train_small_model", "lmul_fp8")


def reading_position(path: pathlib.Path) -> tuple[int, str]:
    return (READING_ORDER.index(path.stem) if path.stem in READING_ORDER else len(READING_ORDER), path.name)


NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.py"), key=reading_position)
KERNEL_NAME = "python3"
CELL_TIMEOUT_S = 120  # per cell; a whole notebook takes 10-30 s on 2 CPU cores
WARNING = re.compile(r"\w*Warning: .*")  # as Python's warnings module prints them


@pytest.fixture(scope="session")
def kernel_specs(tmp_path_factory) -> KernelSpecManager:
    """A kernelspec directory holding only ``python3`` = this interpreter running ipykernel."""
    kernels = tmp_path_factory.mktemp("kernels")
    spec_dir = kernels / KERNEL_NAME
    spec_dir.mkdir()
    # -Xfrozen_modules=off: without it the kernel's debugger warns on every start (Python >= 3.11).
    argv = [sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": "jaxattn tests", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)


def kernel_environment(temporary_directory: pathlib.Path) -> dict[str, str]:
    """This process's environment with a headless matplotlib, ``TMPDIR`` set and the fake CPU device count removed."""
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1", TMPDIR=str(temporary_directory))
    env["XLA_FLAGS"] = xla_flags()
    return env


def run_notebook(source: pathlib.Path, kernel_specs: KernelSpecManager, temporary_directory: pathlib.Path):
    """Converts the percent-format ``source`` and executes every cell in the repository root
    (``tempfile`` writes under ``temporary_directory``).

    Returns the executed notebook; raises ``CellExecutionError`` at the first cell that raises.
    """
    notebook = jupytext.read(source)
    manager = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_specs)
    client = NotebookClient(
        notebook, km=manager, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(REPO_ROOT)}},
    )
    client.execute(env=kernel_environment(temporary_directory))
    return notebook


def test_there_are_notebooks():
    assert [path.stem for path in NOTEBOOKS[: len(READING_ORDER)]] == list(READING_ORDER)


@pytest.mark.parametrize("source", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs(source, kernel_specs, tmp_path):
    notebook = run_notebook(source, kernel_specs, tmp_path)
    cells = notebook.cells
    assert cells[0].cell_type == "markdown", f"{source.name} must open with a markdown cell saying what it shows"
    code = [cell for cell in cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count is not None for cell in code), f"{source.name}: a cell did not run"
    # A clean run warns about nothing (deprecations included): what a reader sees is the result.
    printed = "".join(output.get("text", "") for cell in code for output in cell.outputs)
    assert not WARNING.search(printed), f"{source.name} printed a warning: {WARNING.search(printed).group(0)}"


def test_a_raising_cell_fails_the_runner(tmp_path, kernel_specs):
    broken = tmp_path / "broken.py"
    broken.write_text(
        "# %% [markdown]\n# A notebook whose second cell raises.\n\n"
        "# %%\nimport os\nprint(os.getcwd(), os.environ['MPLBACKEND'])\n\n"
        "# %%\nraise ValueError('the notebook is broken')\n\n"
        "# %%\nprint('never reached')\n"
    )
    with pytest.raises(CellExecutionError, match="the notebook is broken"):
        run_notebook(broken, kernel_specs, tmp_path)


def test_the_kernel_runs_this_interpreter_in_the_repository_root(tmp_path, kernel_specs):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "# %%\nimport os, sys, tempfile\n"
        "import matplotlib, jax\n"
        "print(repr(sys.executable), repr(os.getcwd()), matplotlib.get_backend().lower(), jax.device_count(),\n"
        "      repr(tempfile.gettempdir()))\n"
    )
    outputs = run_notebook(probe, kernel_specs, tmp_path).cells[0].outputs
    printed = "".join(output.get("text", "") for output in outputs)
    assert printed.split() == [repr(sys.executable), repr(str(REPO_ROOT)), "agg", "1", repr(str(tmp_path))]
