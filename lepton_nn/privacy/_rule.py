"""The base of the per-example gradient rules (:mod:`lepton_nn.privacy.grad_sample`): one
layer's records of (input, dL/dz) and the generic norms and clipped sums from its
per-example gradients, which a rule overrides where it knows a cheaper way."""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor, is_grad_enabled


class _Rule:
    """One layer's records (input, dL/dz) and its per-example gradient formulas."""

    def __init__(self, layer, prefix: str, ghost: bool = True):
        self.layer, self.prefix, self.ghost = layer, prefix, ghost
        self.records: list[list] = []  # [input array, gradient array or None]
        self._params = {k: p for k, p in layer._own_parameters() if p.requires_grad}

    def params(self) -> dict:
        return self._params

    def _record(self, x: np.ndarray, z: Tensor) -> None:
        """Keep x and, in backward, dL/dz (a hook on z)."""
        if is_grad_enabled() and z.requires_grad:
            rec = [x, None]
            self.records.append(rec)
            z.register_hook(lambda g: rec.__setitem__(1, np.array(g)))  # g may be scratch

    def recs(self, scale: float):
        if scale == 1.0:
            return [(x, g) for x, g in self.records if g is not None]
        return [(x, g * scale) for x, g in self.records if g is not None]

    def per_example(self, scale: float) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def norms_sq(self, scale: float) -> np.ndarray | None:
        """(N,) squared norm of this layer's per-example gradients (None: nothing recorded)."""
        g = self.per_example(scale)
        if not g:
            return None
        return sum(np.square(a).reshape(a.shape[0], -1).sum(axis=1) for a in g.values())

    def clipped_sum(self, c: np.ndarray, scale: float) -> dict[str, np.ndarray]:
        """sum_n c_n grad_n for each parameter."""
        return {k: np.tensordot(c, a, axes=1) for k, a in self.per_example(scale).items()}

    def attach(self) -> None:
        self.layer.call = self.call  # an instance attribute: the class's call is untouched

    def detach(self) -> None:
        self.layer.__dict__.pop("call", None)
        self.records.clear()


def _add(res: dict, key: str, value: np.ndarray) -> None:
    res[key] = value if key not in res else res[key] + value
