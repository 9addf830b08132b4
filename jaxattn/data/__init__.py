"""Data: in-memory classification tasks and deterministic batch iterators (numpy only, no JAX).

Importing this package registers the built-in tasks ("digits", "listops", "parity", "recall",
"triple_sum", "word_problem", and the Long Range Arena tasks of `jaxattn.data.lra`: "lra_listops",
"lra_text", "lra_retrieval", "lra_image", "lra_pathfinder", "lra_pathx", "pathfinder_generated").
"""

from jaxattn.data import digits, listops, lra, parity, recall, triples, word_problem  # noqa: F401  (imported to register their tasks)
from jaxattn.data.iterator import ArrayIterator, eval_batches
from jaxattn.data.tasks import TASKS, TaskSpec, load_task, register_task

__all__ = ["ArrayIterator", "eval_batches", "TASKS", "TaskSpec", "load_task", "register_task"]
