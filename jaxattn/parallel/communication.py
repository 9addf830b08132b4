"""The collectives of a compiled program and the bytes they move, read from its HLO text.

``collectives(jax.jit(f).lower(...).compile().as_text())`` lists every all-gather, all-reduce,
reduce-scatter, collective-permute and all-to-all with its result shape and group size, and
:func:`bytes_received_per_device` what each device receives under the usual ring algorithms
(``G`` devices in a group, ``S`` the bytes of the result):

    all-gather  S (G-1)/G     reduce-scatter  S (G-1)     all-reduce  2 S (G-1)/G
    all-to-all  S (G-1)/G     collective-permute  S

See docs/sequence_parallel.md#measuring-the-traffic.
"""

import dataclasses
import math
import re

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2,
                "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8, "c64": 8, "c128": 16}
KINDS = ("all-gather", "all-reduce", "reduce-scatter", "collective-permute", "all-to-all")
_INSTRUCTION = re.compile(r"=\s*(?P<shape>\([^=]*?\)|\S+)\s+(?P<kind>" + "|".join(KINDS) + r")(?:-start)?\(")
_ARRAY = re.compile(r"(?P<dtype>[a-z]+[0-9]*[a-z0-9]*)\[(?P<dims>[0-9,]*)\]")


@dataclasses.dataclass(frozen=True)
class Collective:
    kind: str
    shape: str  # as printed, e.g. "f32[8,2,1028]"
    result_bytes: int
    group_size: int

    @property
    def bytes_received_per_device(self) -> float:
        g, s = self.group_size, self.result_bytes
        factor = {"all-gather": (g - 1) / g, "all-to-all": (g - 1) / g, "reduce-scatter": g - 1,
                  "all-reduce": 2 * (g - 1) / g, "collective-permute": 1.0}[self.kind]
        return s * factor


def _shape_bytes(shape: str) -> int:
    total = 0
    for array in _ARRAY.finditer(shape):
        dims = [int(d) for d in array.group("dims").split(",") if d]
        total += math.prod(dims) * _DTYPE_BYTES.get(array.group("dtype"), 4)
    return total


def _group_size(line: str, num_devices: int) -> int:
    iota = re.search(r"replica_groups=\[([0-9,]+)\]<=", line)
    if iota:
        return int(iota.group(1).split(",")[-1])
    explicit = re.search(r"replica_groups=\{\{([0-9,]*)\}", line)
    if explicit and explicit.group(1):
        return len(explicit.group(1).split(","))
    return num_devices


def collectives(hlo_text: str, num_devices: int = 1) -> list[Collective]:
    """Every collective of compiled HLO text (an async pair counts once, at its start).

    ``num_devices`` is the group size where the instruction names no replica groups."""
    found = []
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.search(line)
        if not match:
            continue
        shape = match.group("shape")
        if shape.startswith("("):  # async start: (operand, result, ...) -- the result is the second entry
            arrays = [a.group(0) for a in _ARRAY.finditer(shape)]
            shape = arrays[1] if len(arrays) > 1 else arrays[0]
        shape = re.sub(r"\{[^}]*\}$", "", shape)
        found.append(Collective(match.group("kind"), shape, _shape_bytes(shape), _group_size(line, num_devices)))
    return found


def bytes_received_per_device(hlo_text: str, num_devices: int = 1) -> float:
    """Sum over the program's collectives of the bytes one device receives."""
    return sum(c.bytes_received_per_device for c in collectives(hlo_text, num_devices))
