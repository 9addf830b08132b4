"""Every public class of ``jaxattn.nn`` documents its shapes and a usage example; the example runs
and gives what its comments state: ``name = ...  # [2, 64, 32]`` (that shape, finite values) and
``expression  # literal`` (that value). The MixerBlock example decodes its first token as the whole
sequence call does."""

import ast
import inspect
import re
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxattn.nn

PUBLIC_CLASSES = [name for name in jaxattn.nn.__all__ if inspect.isclass(getattr(jaxattn.nn, name))]
STATED_SHAPE = re.compile(r"^(\w+) = .*#\s*\[(\d+(?:,\s*\d+)*)\]$")
STATED_VALUE = re.compile(r"^([^=#]+?)\s+#\s*(.+)$")


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


def check_stated_results(obj, code: str, namespace: dict) -> int:
    """Asserts every result the example's comments state; returns how many there are."""
    stated = 0
    for line in code.split("\n"):
        if match := STATED_SHAPE.match(line):
            name, shape = match.group(1), tuple(int(n) for n in match.group(2).split(","))
            value = namespace[name]
            assert value.shape == shape, f"{obj.__name__}: {name} has shape {value.shape}, the example says {shape}"
            assert bool(jnp.all(jnp.isfinite(value))), f"{obj.__name__}: {name} is not finite"
            stated += 1
        elif match := STATED_VALUE.match(line):
            expression, literal = match.groups()
            got = eval(expression, namespace)  # noqa: S307
            assert got == ast.literal_eval(literal), f"{obj.__name__}: {expression} is {got!r}, the example says {literal}"
            stated += 1
    return stated


def run_example(obj, module) -> dict:
    """Runs ``obj``'s example with ``jax``, ``jnp`` and every public name of ``module``, checks the
    results it states (at least one); returns its namespace."""
    namespace = {"jax": jax, "jnp": jnp, **{name: getattr(module, name) for name in module.__all__}}
    code = example_of(obj)
    exec(code, namespace)  # noqa: S102
    assert check_stated_results(obj, code, namespace) >= 1, f"{obj.__name__}: the example states no result"
    return namespace


@pytest.mark.parametrize("name", PUBLIC_CLASSES)
def test_public_class_has_shapes_and_a_running_example(name):
    cls = getattr(jaxattn.nn, name)
    assert "[B, L, " in inspect.getdoc(cls), f"{name}: the docstring gives the shapes"
    namespace = run_example(cls, jaxattn.nn)
    if "y" in namespace and "x" in namespace:  # a sequence mixer or block: same shape out as in
        assert namespace["y"].shape == namespace["x"].shape


def test_mixer_block_example_decodes_the_first_token_as_the_call():
    namespace = run_example(jaxattn.nn.MixerBlock, jaxattn.nn)
    block, y, y_0, carry = namespace["block"], namespace["y"], namespace["y_0"], namespace["carry"]
    np.testing.assert_allclose(np.asarray(y_0), np.asarray(y[:, 0]), rtol=1e-5, atol=1e-5)
    assert jax.tree.structure(carry) == jax.tree.structure(block.init_carry(2, 32))
