"""Task registry: a `TaskSpec` describes a classification data set; `load_task` builds one by name.

A task builder is a function taking only keyword options (with defaults) and returning a
`TaskSpec`. Builders register themselves with `@register_task("name")`; the built-in tasks live in
sibling modules that are imported when `jaxattn.data` is imported.

Every registered task and the arrays it holds: docs/tasks.md#the-task-contract.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable

import numpy as np

SPLIT_NAMES = ("train", "validation", "test")
ARRAY_KEYS = ("inputs", "targets", "lengths")

# Modules defining the built-in tasks; imported lazily so `tasks` itself has no import cycle.
_BUILTIN_TASK_MODULES = ("jaxattn.data.digits", "jaxattn.data.listops", "jaxattn.data.lra", "jaxattn.data.mnist",
                         "jaxattn.data.parity", "jaxattn.data.recall", "jaxattn.data.triples", "jaxattn.data.word_problem")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A sequence-classification data set and the facts a model needs to be built for it.

    Attributes:
      name: registry name of the task.
      num_classes: number of target classes C; targets lie in [0, C). For token-level tasks
        (``targets`` ``[N, L]``) the classes are token ids and -1 marks positions without a target.
      seq_len: padded sequence length L.
      vocab_size: number of token ids including padding 0, for token inputs; None for real features.
      feature_dim: feature size F for real-valued inputs; None for token inputs.
      splits: "train", "validation", "test" -> {"inputs": int32 [N, L] or float32 [N, L, F],
        "targets": int32 [N] (one label per sequence) or [N, L] (one per position, -1 = none),
        "lengths": int32 [N] (real positions, >= 1)}.
    """

    name: str
    num_classes: int
    seq_len: int
    vocab_size: int | None
    feature_dim: int | None
    splits: dict[str, dict[str, np.ndarray]]

    @property
    def per_token(self) -> bool:
        """Whether targets are per position ``[N, L]`` (a sequence-to-sequence task)."""
        return self.splits["train"]["targets"].ndim == 2

    def __post_init__(self):
        # Exactly one input kind, so downstream code can branch on `vocab_size is None`.
        if (self.vocab_size is None) == (self.feature_dim is None):
            raise ValueError(f"exactly one of vocab_size ({self.vocab_size}) and feature_dim "
                             f"({self.feature_dim}) must be set")
        missing = [split for split in SPLIT_NAMES if split not in self.splits]
        if missing:
            raise ValueError(f"splits is missing {missing}; expected {list(SPLIT_NAMES)}")
        for split, arrays in self.splits.items():
            absent = [key for key in ARRAY_KEYS if key not in arrays]
            if absent:
                raise ValueError(f"splits[{split!r}] is missing arrays {absent}")


TaskBuilder = Callable[..., TaskSpec]
TASKS: dict[str, TaskBuilder] = {}


def register_task(name: str) -> Callable[[TaskBuilder], TaskBuilder]:
    """Decorator adding a builder to `TASKS` under `name` (ValueError if the name is taken)."""

    def decorator(builder: TaskBuilder) -> TaskBuilder:
        if name in TASKS and TASKS[name] is not builder:
            raise ValueError(f"task name {name!r} is already registered to {TASKS[name]!r}")
        TASKS[name] = builder
        return builder

    return decorator


def import_builtin_tasks() -> None:
    """Imports the modules of the built-in tasks, which register them (idempotent)."""
    for module_name in _BUILTIN_TASK_MODULES:
        importlib.import_module(module_name)


def load_task(name: str, **options) -> TaskSpec:
    """Builds the task registered as `name` with the given keyword options.

    Raises:
      ValueError: if no task is registered under `name` (the message lists the known names).
      TypeError: if an option is not accepted by the task's builder (the message names it).
    """
    import_builtin_tasks()
    if name not in TASKS:
        raise ValueError(f"unknown task name {name!r}; known tasks: {sorted(TASKS)}")
    builder = TASKS[name]
    accepted = [parameter.name for parameter in inspect.signature(builder).parameters.values()
                if parameter.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for task {name!r}; accepted options: {accepted}")
    return builder(**options)
