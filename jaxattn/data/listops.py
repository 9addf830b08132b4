"""ListOps (Long Range Arena): classify the value of a long nested prefix expression.

An expression is a tree of operators over digits 0-9, serialised in LRA's token format, e.g.
`[MAX 2 9 [MIN 4 7 ] 0 ]` (value 9). Operators: MAX, MIN, MED (median; for an even count the
integer median `int(np.median(values))`, as LRA), SM (sum mod 10). The label is the value (10
classes). Generation follows the LRA recipe: every node has 2..max_args arguments, each argument is
a subtree with probability 0.25 while the child's depth is below `max_depth`, otherwise a digit;
trees whose token length falls outside [min_length, max_length] are redrawn.

Deviations from LRA, both distribution-preserving for accepted examples: the root is always an
operator (a bare digit has length 1 and would be rejected anyway), and a tree is abandoned as soon as
it is certain to exceed max_length (so huge trees cost nothing).

See docs/tasks.md#listops.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from jaxattn.data.split_cache import cached_splits, check_split_sizes
from jaxattn.data.tasks import SPLIT_NAMES, TaskSpec, register_task

OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")
CLOSE = "]"
DIGITS = tuple(str(digit) for digit in range(10))
PAD = "<pad>"
TOKENS = (PAD,) + OPERATORS + (CLOSE,) + DIGITS  # token id = position in this tuple
TOKEN_IDS = {token: token_id for token_id, token in enumerate(TOKENS)}
VOCAB_SIZE = len(TOKENS)  # 16
NUM_CLASSES = 10

_FIRST_OPERATOR_ID = TOKEN_IDS[OPERATORS[0]]
_CLOSE_ID = TOKEN_IDS[CLOSE]
_FIRST_DIGIT_ID = TOKEN_IDS[DIGITS[0]]
_MAX, _MIN, _MED, _SUM_MOD = range(len(OPERATORS))
_SMALLEST_TREE_LENGTH = 4  # "[OP d d ]"

# Redraw budget: give up once draws exceed this floor plus this many per accepted example, i.e.
# when fewer than ~1 in 1000 trees meets the length bounds (or after a bounded total).
_MIN_ATTEMPTS_BEFORE_GIVING_UP = 10_000
_MAX_ATTEMPTS_PER_EXAMPLE = 1_000
_RANDOM_BLOCK_ROWS = 4096
_CACHE_FORMAT_VERSION = 1


def apply_operator(operator: int, values: list[int]) -> int:
    """Value of operator index `operator` (position in OPERATORS) applied to digit values."""
    if operator == _MAX:
        return max(values)
    if operator == _MIN:
        return min(values)
    if operator == _MED:
        ordered = sorted(values)
        middle = len(ordered) // 2
        if len(ordered) % 2:
            return ordered[middle]
        # Equals int(np.median(values)) for non-negative values: the mean of the middle pair, truncated.
        return (ordered[middle - 1] + ordered[middle]) // 2
    return sum(values) % 10


def decode(token_ids) -> str:
    """Space-joined tokens of a [L] id sequence, padding dropped (for inspection)."""
    return " ".join(TOKENS[token_id] for token_id in np.asarray(token_ids).tolist() if token_id != 0)


def max_possible_length(*, max_depth: int, max_args: int) -> int:
    """Token length of the largest tree: every node has max_args arguments, all subtrees where allowed."""
    length = 1  # an argument at depth max_depth is always a digit
    for _ in range(max_depth - 1):
        length = 2 + max_args * length
    return length


def _uniform_triples(rng: np.random.Generator) -> Iterator[list[float]]:
    """Endless uniforms in [0, 1), three per drawn argument; drawn in blocks to amortise numpy overhead."""
    while True:
        yield from rng.random((_RANDOM_BLOCK_ROWS, 3)).tolist()


def _draw_tree(triples: Iterator[list[float]], *, max_depth: int, max_args: int, max_length: int,
               subtree_probability: float) -> tuple[list[int], int] | None:
    """Draws one expression with an explicit stack (no recursion limit).

    Returns:
      (token ids in prefix order, value), or None once the tree is certain to exceed max_length.
    """
    num_operators, extra_args = len(OPERATORS), max_args - 1
    _, operator_draw, args_draw = next(triples)
    operator = int(operator_draw * num_operators)
    tokens = [_FIRST_OPERATOR_ID + operator]
    # One entry per open node, root first: [operator, arguments still to draw, argument values].
    open_nodes = [[operator, 2 + int(args_draw * extra_args), []]]
    while True:
        node = open_nodes[-1]
        if node[1] == 0:
            tokens.append(_CLOSE_ID)
            value = apply_operator(node[0], node[2])
            open_nodes.pop()
            if not open_nodes:
                return tokens, value
            open_nodes[-1][2].append(value)
            continue
        node[1] -= 1
        subtree_draw, choice_draw, args_draw = next(triples)
        child_depth = len(open_nodes) + 1  # the root is depth 1
        if child_depth < max_depth and subtree_draw < subtree_probability:
            operator = int(choice_draw * num_operators)
            tokens.append(_FIRST_OPERATOR_ID + operator)
            open_nodes.append([operator, 2 + int(args_draw * extra_args), []])
        else:
            digit = int(choice_draw * 10)
            tokens.append(_FIRST_DIGIT_ID + digit)
            node[2].append(digit)
        # Every open node still needs its "]", so this is a lower bound on the final length.
        if len(tokens) + len(open_nodes) > max_length:
            return None


def _check_generation_options(*, min_length: int, max_length: int, max_depth: int, max_args: int,
                              subtree_probability: float) -> None:
    if max_depth < 2:
        raise ValueError(f"max_depth must be >= 2 (the root is depth 1), got {max_depth}")
    if max_args < 2:
        raise ValueError(f"max_args must be >= 2, got {max_args}")
    if not 0.0 <= subtree_probability <= 1.0:
        raise ValueError(f"subtree_probability must lie in [0, 1], got {subtree_probability}")
    if not 1 <= min_length <= max_length:
        raise ValueError(f"need 1 <= min_length <= max_length, got min_length={min_length}, "
                         f"max_length={max_length}")
    if max_length < _SMALLEST_TREE_LENGTH:
        raise ValueError(f"max_length must be >= {_SMALLEST_TREE_LENGTH} (the shortest expression), "
                         f"got {max_length}")
    largest = max_possible_length(max_depth=max_depth, max_args=max_args)
    if min_length > largest:
        raise ValueError(f"min_length={min_length} exceeds the longest possible expression ({largest} tokens) "
                         f"for max_depth={max_depth}, max_args={max_args}")


def generate_listops(num_examples: int, *, rng: np.random.Generator, min_length: int = 500,
                     max_length: int = 2000, max_depth: int = 10, max_args: int = 10,
                     subtree_probability: float = 0.25) -> dict[str, np.ndarray]:
    """Draws `num_examples` expressions whose token lengths lie in [min_length, max_length].

    Returns:
      "inputs" int32 [num_examples, max_length] (token ids, 0-padded), "targets" int32
      [num_examples] (values 0-9), "lengths" int32 [num_examples].

    Raises:
      ValueError: if the options are inconsistent, or if too few drawn trees meet the length bounds
        (fewer than about 1 in 1000), instead of redrawing forever.
    """
    _check_generation_options(min_length=min_length, max_length=max_length, max_depth=max_depth,
                              max_args=max_args, subtree_probability=subtree_probability)
    if num_examples < 0:
        raise ValueError(f"num_examples must be >= 0, got {num_examples}")
    inputs = np.zeros((num_examples, max_length), dtype=np.int32)
    targets = np.zeros(num_examples, dtype=np.int32)
    lengths = np.zeros(num_examples, dtype=np.int32)
    triples = _uniform_triples(rng)
    accepted = attempts = 0
    while accepted < num_examples:
        if attempts >= _MIN_ATTEMPTS_BEFORE_GIVING_UP + _MAX_ATTEMPTS_PER_EXAMPLE * accepted:
            raise ValueError(
                f"only {accepted} of {attempts} drawn ListOps trees had a token length in "
                f"[min_length={min_length}, max_length={max_length}] with max_depth={max_depth}, "
                f"max_args={max_args}, subtree_probability={subtree_probability}; widen the length "
                "bounds or change the tree options")
        attempts += 1
        drawn = _draw_tree(triples, max_depth=max_depth, max_args=max_args, max_length=max_length,
                           subtree_probability=subtree_probability)
        if drawn is None or len(drawn[0]) < min_length:
            continue
        tokens, value = drawn
        inputs[accepted, :len(tokens)] = tokens
        targets[accepted] = value
        lengths[accepted] = len(tokens)
        accepted += 1
    return {"inputs": inputs, "targets": targets, "lengths": lengths}


@register_task("listops")
def build_listops_task(*, num_train: int = 96_000, num_validation: int = 2_000, num_test: int = 2_000,
                       min_length: int = 500, max_length: int = 2000, max_depth: int = 10, max_args: int = 10,
                       subtree_probability: float = 0.25, seed: int = 0,
                       cache_dir: str | os.PathLike | None = None) -> TaskSpec:
    """Builds ListOps; defaults match LRA. Split i in (train, validation, test) uses `default_rng((seed, i))`.

    With `cache_dir`, the arrays are loaded from / saved to `listops_<hash of options>.npz` there.
    """
    generation_options = dict(min_length=min_length, max_length=max_length, max_depth=max_depth,
                              max_args=max_args, subtree_probability=subtree_probability)
    _check_generation_options(**generation_options)
    sizes = {"train": num_train, "validation": num_validation, "test": num_test}
    check_split_sizes(sizes, minimum=0)
    cache_options = {"format": _CACHE_FORMAT_VERSION, **generation_options,
                     **{f"num_{s}": n for s, n in sizes.items()}, "seed": seed}

    def generate():
        return {split: generate_listops(sizes[split], rng=np.random.default_rng((seed, split_number)),
                                        **generation_options)
                for split_number, split in enumerate(SPLIT_NAMES)}

    splits = cached_splits(cache_dir, "listops", cache_options, generate,
                           announce=f"Generating ListOps: {sizes} expressions of {min_length}..{max_length} tokens")
    return TaskSpec(name="listops", num_classes=NUM_CLASSES, seq_len=max_length, vocab_size=VOCAB_SIZE,
                    feature_dim=None, splits=splits)
