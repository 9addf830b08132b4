"""Orbax checkpoints of the train state and the data iterator's position.

Saves are asynchronous and periodic (every ``interval`` steps) and keep the last ``keep``;
a run that restarts in the same work directory restores the latest complete checkpoint, so an
interrupted run continues exactly where it stopped.

With several processes every process calls every method (orbax synchronises them): each writes
its own shards of the arrays and process 0 the JSON item and the commit. The JAX distributed
runtime also turns SIGTERM (a scheduler's preemption or time-limit notice) into a step that all
processes agree on; orbax saves there and :meth:`Checkpointer.reached_preemption` says to stop.

See docs/architecture.md#training-and-checkpointing.
"""

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers


class Preempted(Exception):
    """Training stopped at a preemption sync point after saving its checkpoint; rerunning resumes."""


class Checkpointer:
    """``CheckpointManager`` holding two items: ``state`` (a pytree of arrays) and ``data`` (JSON)."""

    def __init__(self, directory: str, *, interval: int, keep: int):
        if interval < 1 or keep < 1:
            raise ValueError(f"checkpoint interval ({interval}) and keep ({keep}) must be >= 1")
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=checkpoint_managers.save_decision_policy.FixedIntervalPolicy(interval),
            preservation_policy=checkpoint_managers.preservation_policy.LatestN(keep),
            cleanup_tmp_directories=True,
        )
        registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
        registry.add("state", ocp.args.StandardSave, ocp.StandardCheckpointHandler)
        registry.add("state", ocp.args.StandardRestore, ocp.StandardCheckpointHandler)
        registry.add("data", ocp.args.JsonSave, ocp.JsonCheckpointHandler)
        registry.add("data", ocp.args.JsonRestore, ocp.JsonCheckpointHandler)
        self._manager = ocp.CheckpointManager(
            os.path.abspath(directory), options=options, handler_registry=registry
        )

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, data_state: dict, *, force: bool = False) -> bool:
        """Starts an asynchronous save if ``step`` is due (or ``force``); returns whether it did."""
        return self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)),
            force=force,
        )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """State restored into ``abstract_state`` (``jax.ShapeDtypeStruct``s with shardings), and the data state."""
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
            ),
        )
        return restored.state, restored.data

    def reached_preemption(self, step: int) -> bool:
        """Whether every process has reached the step agreed after a preemption notice (SIGTERM to
        a process of a multi-process run); ``save`` then saves at ``step`` whatever the interval.
        Always False for a single process."""
        return self._manager.reached_preemption(step)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
    """``jax.ShapeDtypeStruct`` tree carrying ``shardings``, the target of a restore."""
    return jax.tree.map(
        lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree, shardings
    )
