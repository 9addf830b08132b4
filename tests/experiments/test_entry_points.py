"""What the experiment mains share: the argument check, the log filter, figure files and timing."""

import pytest
from absl import app, logging

from experiments.logging_setup import start_main
from jaxattn.timing import median_seconds
from jaxattn.train.plots import pyplot, save_figure


def test_start_main_refuses_positional_arguments_and_filters_logs():
    with pytest.raises(app.UsageError, match=r"Unexpected arguments: \['extra'\]"):
        start_main(["experiment", "extra"])
    handler = logging.get_absl_handler()
    before = len(handler.filters)
    start_main(["experiment"])
    assert len(handler.filters) == before + 1
    handler.removeFilter(handler.filters[-1])


def test_save_figure_writes_the_file_and_closes_the_figure(tmp_path):
    plt = pyplot()
    figure, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    save_figure(figure, str(tmp_path / "line.png"), dpi=50)
    assert (tmp_path / "line.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figure.number not in plt.get_fignums()


def test_median_seconds_warms_up_once_then_times_each_repeat():
    calls = []

    def fn(x):
        calls.append(x)
        return x

    seconds = median_seconds(fn, 3, repeats=4)
    assert calls == [3] * 5 and 0.0 <= seconds < 1.0
