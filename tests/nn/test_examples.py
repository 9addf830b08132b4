"""Every public class of ``jaxattn.nn`` documents its shapes and a usage example, and the example runs."""

import inspect
import textwrap

import jax
import jax.numpy as jnp
import pytest

import jaxattn.nn

PUBLIC_CLASSES = [name for name in jaxattn.nn.__all__ if inspect.isclass(getattr(jaxattn.nn, name))]


def example_of(obj) -> str:
    """The indented block after ``Example::`` in ``obj``'s docstring (dedented)."""
    doc = inspect.getdoc(obj) or ""
    assert "Example::" in doc, f"{obj.__name__} has no Example:: block"
    lines = doc.split("Example::", 1)[1].split("\n")[1:]
    block = []
    for line in lines:
        if line.strip() and not line.startswith(" "):
            break
        block.append(line)
    code = textwrap.dedent("\n".join(block)).strip()
    assert 2 <= len(code.split("\n")) <= 6, f"{obj.__name__}: an example is a few lines"
    return code


def run_example(obj, module) -> dict:
    """Runs ``obj``'s example with ``jax``, ``jnp`` and every public name of ``module``; its namespace."""
    namespace = {"jax": jax, "jnp": jnp, **{name: getattr(module, name) for name in module.__all__}}
    exec(example_of(obj), namespace)  # noqa: S102
    return namespace


@pytest.mark.parametrize("name", PUBLIC_CLASSES)
def test_public_class_has_shapes_and_a_running_example(name):
    cls = getattr(jaxattn.nn, name)
    assert "[B, L, " in inspect.getdoc(cls), f"{name}: the docstring gives the shapes"
    namespace = run_example(cls, jaxattn.nn)
    if "y" in namespace and "x" in namespace:  # a sequence mixer or block: same shape out as in
        assert namespace["y"].shape == namespace["x"].shape
