"""Which chained convolutions take Winograd's F(2x2, 3x3) tiling, and their filters for it.

A 3x3, stride-1 convolution followed by a 2x2 / 2 max pool (its BatchNorm and ReLU folded in)
runs in ``conv2d_direct_chain`` as Winograd tiles, one per pooling window
(``kernels/csrc/conv_winograd.h``, twin in ``backend/reference_conv.py``): 16 multiplies
per tile, channel and filter instead of 36. The filters' transform ``G g G^T`` is computed
once per weight, here, at the plan's first binding. Imported by the chain's binding only
(not at ``import lepton_nn.runtime``: the cold start's module list).

Measured on the bench CNN's 16 -> 32 layer (14x14, batch 64, one thread, AMD EPYC Zen 3,
loaded host): 19-20 us an image against the direct kernel's 24-27 us. Below 8 input
channels the products' reduction is too short to pay for the transforms (not measured; the
1-channel first layer of a CNN takes the pooled direct tiling, which is faster there).
"""

from __future__ import annotations

from lepton_nn.backend.reference_conv import winograd_fits

#: fewest input channels for which a layer takes the Winograd tiling
WINOGRAD_MIN_CHANNELS = 8


def winograd_filters(step, k):
    """``k.conv2d_winograd_pack`` of a :class:`~.steps.ConvStep`'s filters when the layer
    takes the Winograd tiling in a chain, else None; computed once per weight array."""
    c = step.in_shape[0]
    if c < WINOGRAD_MIN_CHANNELS or not winograd_fits(step.geom, step.pool, step.act):
        return None
    cached = getattr(step, "_winograd", None)
    if cached is None or cached[0] is not step.w2:
        cached = (step.w2, k.conv2d_winograd_pack(step.w2, c))
        step._winograd = cached
    return cached[1]
