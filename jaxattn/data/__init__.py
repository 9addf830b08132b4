"""Data: in-memory classification tasks and deterministic batch iterators (numpy only, no JAX).

Importing this package registers the built-in tasks ("digits", "smnist", "psmnist", "listops",
"parity", "recall", "triple_sum", "word_problem", and the Long Range Arena tasks of
`jaxattn.data.lra`: "lra_listops", "lra_text", "lra_retrieval", "lra_image", "lra_pathfinder",
"lra_pathx", "pathfinder_generated"); the modules are listed once, in `jaxattn.data.tasks`.
"""

from jaxattn.data.iterator import ArrayIterator, eval_batches
from jaxattn.data.tasks import TASKS, TaskSpec, import_builtin_tasks, load_task, register_task

import_builtin_tasks()

__all__ = ["ArrayIterator", "eval_batches", "TASKS", "TaskSpec", "load_task", "register_task"]
