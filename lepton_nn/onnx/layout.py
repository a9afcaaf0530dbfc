"""How an ONNX tensor's axes relate to the converted model's own tensor.

Exporters move data around between layers (``Transpose`` to time-major before an LSTM,
``Reshape``/``Flatten`` before a Gemm, ``Squeeze`` of a direction axis...). Rather than
matching each exporter's sequence of view ops, every axis is labelled by the *atoms* it is
made of: named factors with a size (``N`` the batch, ``C``, ``H``, ``T``, ...). A view op
only relabels: Transpose permutes the axes, Reshape/Flatten regroup the atoms in order,
Squeeze/Unsqueeze drop or add axes of size 1. Compute ops then ask for their input in the
layout the lepton_nn layer computes in (e.g. ``[N, C, H, W]`` for Conv, ``[T, N, F]`` for an
ONNX LSTM whose lepton_nn layer reads ``[N, T, F]``), comparing atoms with those of size 1
left out. A view that would split an atom or mix the batch into other axes is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lepton_nn.errors import ModelFormatError

Axes = list[tuple[str, ...]]

__all__ = ["Atoms", "Axes", "normal"]


@dataclass
class Atoms:
    """The atoms' sizes and a counter for fresh names."""

    sizes: dict[str, int] = field(default_factory=lambda: {"N": -1})
    count: int = 0

    def new(self, size: int, hint: str = "a") -> str:
        self.count += 1
        name = f"{hint}{self.count}"
        self.sizes[name] = int(size)
        return name

    def size(self, axis: tuple[str, ...]) -> int:
        return math.prod(self.sizes[a] for a in axis if a != "N")

    def real(self, atoms) -> tuple[str, ...]:
        """The atoms other than those of size 1 (which may sit anywhere)."""
        return tuple(a for a in atoms if self.sizes[a] != 1)

    def normal(self, axes: Axes) -> tuple[tuple[str, ...], ...]:
        return normal(axes, self)

    # -- view ops on ONNX axes ----------------------------------------------------------
    def reshape(self, axes: Axes, target: list[int | None], where: str) -> Axes:
        """Regroup the atoms of ``axes`` into ``target`` (ONNX Reshape dims with 0 already
        resolved; ``None`` marks the batch, -1 one inferred dim)."""
        atoms = [a for ax in axes for a in self.real(ax)]
        total = math.prod(self.sizes[a] for a in atoms if a != "N")
        known = math.prod(d for d in target if d not in (None, -1))
        if "N" in atoms and None not in target and target.count(-1) == 1 and known == total:
            target = [None if d == -1 else d for d in target]  # the inferred dim is the batch
        target = [total // max(known, 1) if d == -1 else d for d in target]
        if target.count(None) != (1 if "N" in atoms else 0):
            raise ModelFormatError(f"{where}: the reshape does not keep the batch axis apart")
        out: Axes = []
        pos = 0
        for d in target:
            if d is None:
                if pos >= len(atoms) or atoms[pos] != "N":
                    raise ModelFormatError(f"{where}: the reshape moves the batch axis")
                out.append(("N",))
                pos += 1
                continue
            group: list[str] = []
            prod = 1
            while prod < d and pos < len(atoms) and atoms[pos] != "N":
                group.append(atoms[pos])
                prod *= self.sizes[atoms[pos]]
                pos += 1
            if prod != d:
                raise ModelFormatError(
                    f"{where}: the reshape to {target} splits an axis (only merging axes, "
                    "in order, can be converted)"
                )
            out.append(tuple(group))
        if pos != len(atoms):
            raise ModelFormatError(f"{where}: the reshape to {target} does not fit the input")
        return out

    def flatten(self, axes: Axes, axis: int) -> Axes:
        if axis < 0:
            axis += len(axes)
        left = tuple(a for ax in axes[:axis] for a in ax)
        right = tuple(a for ax in axes[axis:] for a in ax)
        return [left, right]


def normal(axes: Axes, atoms: Atoms) -> tuple[tuple[str, ...], ...]:
    """``axes`` with atoms of size 1 dropped and then empty axes dropped: two layouts with
    the same normal form hold the same numbers in the same order."""
    out = (atoms.real(ax) for ax in axes)
    return tuple(ax for ax in out if ax)
