"""Window geometry of convolution and pooling on (H, W) images, shared by the training ops
(:mod:`lepton_nn.ops.conv`) and the runtime (:mod:`lepton_nn.runtime.parsers`).

The compiled kernels (kernels/conv.pyx) trust their arguments and index with ``ptrdiff_t``,
so both callers run :func:`window_output_size` (and :func:`check_scratch` for the im2col
column buffer) before entering them: a huge dilation, stride or padding gives a clear Python
error, never an overflow in C. Plain integers in and out; nothing here imports a kernel.
"""

from __future__ import annotations

__all__ = [
    "CONV_CHUNK_BYTES",
    "CONV_DIRECT_MAX_BYTES",
    "MAX_EXTENT",
    "MAX_SAMPLE_ELEMENTS",
    "check_scratch",
    "conv_direct_scratch",
    "winograd_scratch",
    "output_size",
    "same_padding",
    "window_output_size",
]

# Images per convolution chunk, in the training op and the runtime: a chunk's column matrix
# and output ((C kh kw + O) x OH OW values an image) are kept near this size so that they are
# still in the core's L2 cache when the GEMM, the activation and, backward, col2im read them.
# Measured on W3 (batch 64, 1 MiB L2 per core): chunks of 0.5-1 MiB ran the training step
# ~30 % faster than one column matrix for the whole batch (7 MiB for its second convolution),
# which the GEMM and col2im stream from memory; counting the output as well as the columns
# gained another ~10 % (a conv1 chunk had been 18 images: 0.5 MiB of columns but 0.9 MiB of
# output). On two threads 1 MiB beat 0.5 MiB by ~4 % (fewer chunks, so fewer GIL hand-offs
# around the compiled calls); on one it was even.
CONV_CHUNK_BYTES = 1 << 20
#: Largest dilated window extent d (k - 1) + 1, stride and padding: far beyond real use.
MAX_EXTENT = 1 << 20
#: Largest scratch buffer per sample (elements), e.g. the im2col columns C kh kw OH OW.
MAX_SAMPLE_ELEMENTS = 1 << 28


def same_padding(size, kernel, stride, dilation) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) padding giving an output of ceil(n / s) per axis.

    total = max((ceil(n / s) - 1) s + d (k - 1) + 1 - n, 0), top = total // 2 (the extra
    row/column goes below/right, as in TensorFlow).
    """
    out: list[int] = []
    for n, k, s, d in zip(size, kernel, stride, dilation, strict=True):
        total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
        out += [total // 2, total - total // 2]
    return out[0], out[1], out[2], out[3]


def output_size(size, pads, kernel, stride, dilation) -> tuple[int, int]:
    """OH = (H + top + bottom - d (k - 1) - 1) // s + 1, and likewise OW (unchecked)."""
    (h, w), (pt, pb, pl, pr) = size, pads
    oh = (h + pt + pb - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    ow = (w + pl + pr - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    return oh, ow


def window_output_size(
    size, pads, kernel, stride, dilation, what: str, error: type[Exception] = ValueError
) -> tuple[int, int]:
    """:func:`output_size`, once the geometry is known to be safe for the compiled kernels.

    Raises ``error`` (a message starting with ``what``) when a window extent, stride or
    padding exceeds :data:`MAX_EXTENT`, or when the window does not fit (OH or OW < 1).
    """
    extents = [dilation[i] * (kernel[i] - 1) + 1 for i in (0, 1)]
    if max(*extents, *stride, *pads) > MAX_EXTENT:
        raise error(
            f"{what}: window {tuple(extents)} (kernel {tuple(kernel)}, dilation "
            f"{tuple(dilation)}), stride {tuple(stride)} or padding {tuple(pads)} larger "
            f"than {MAX_EXTENT}"
        )
    oh, ow = output_size(size, pads, kernel, stride, dilation)
    if oh < 1 or ow < 1:
        raise error(
            f"{what}: the window {tuple(kernel)} (dilation {tuple(dilation)}, padding "
            f"{tuple(pads)}) does not fit an input of size {tuple(size)}"
        )
    return oh, ow


def check_scratch(elements: int, what: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` if a layer needs more than :data:`MAX_SAMPLE_ELEMENTS` scratch values
    per sample (a hostile file or a typo must not allocate absurd amounts of memory)."""
    if elements > MAX_SAMPLE_ELEMENTS:
        raise error(
            f"{what} would need {elements} scratch values per sample "
            f"(at most {MAX_SAMPLE_ELEMENTS})"
        )


def permute_dims(dims, rank: int | None = None) -> tuple[int, ...]:
    """``dims`` checked as a permutation of 1..k (the axes after the batch axis, as Keras's
    ``Permute``); ``rank``: k must be the per-sample rank. ValueError otherwise."""
    if not isinstance(dims, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in dims
    ):
        raise ValueError(f"dims {dims!r:.80} must be a list of axis numbers")
    if sorted(dims) != list(range(1, len(dims) + 1)):
        raise ValueError(f"dims {list(dims)} is not a permutation of 1..{len(dims)}")
    if rank is not None and len(dims) != rank:
        raise ValueError(f"dims {list(dims)} for {rank} axes after the batch")
    return tuple(dims)


#: Largest shifted-image buffer (bytes, one image) for which the runtime runs a stride-1
#: float32 convolution through ``conv2d_direct_forward``: its reads then stay in the L2
#: cache of a core (above it, im2col chunks and the BLAS GEMM, which blocks for the caches).
CONV_DIRECT_MAX_BYTES = 1 << 18


def winograd_scratch(c: int, pool: tuple) -> int:
    """Floats of scratch of the Winograd tiling (kernels/csrc/conv_winograd.h, lnn_cw_scratch)
    for C input channels before a 2x2 pool to (POH, POW) = pool[6:]: the image's padded rows
    split by column parity, C (2 POH + 2) 2 (ceil8(POW) + 8); one group's transformed inputs,
    16 C 24; one filter block's products, 16 4 24; a canvas of the padded rows,
    (2 POH + 2) (2 ceil8(POW) + 16)."""
    pow8, rows = -(-pool[7] // 8) * 8, 2 * pool[6] + 2
    return c * rows * 2 * (pow8 + 8) + 16 * c * 24 + 16 * 4 * 24 + rows * (2 * pow8 + 16)


def conv_direct_scratch(
    c: int, o: int, geom: tuple, oh: int, ow: int, pool: tuple | None = None
) -> tuple[int, int]:
    """Sizes (floats) of the scratch of ``conv2d_direct_forward`` (kernels/csrc/conv_direct.h)
    for C input channels and O filters: s, C kw (OH + (kh - 1) dh) OW + 24 (the image copied
    once per column tap, with the 24 a last pixel tile reads past it), and z, 4 ceil(O / 4)
    rows of OH OW rounded up to 8, + 24 (read past by the 2x2 pool). With a 2x2 / stride 2
    unpadded ``pool`` (POH, POW = pool[6:]) s also holds the pooled tiling's planes,
    C 2 V of them (V = (kw - 1) dw + 2), each ceil8((POH + ((kh - 1) dh + 1) // 2) POW + 8);
    a 3x3 stride-1 one also Winograd's (conv_winograd.h, winograd_scratch)."""
    kh, kw, dh, dw = geom[0], geom[1], geom[6], geom[7]
    shifted = c * kw * (oh + (kh - 1) * dh) * ow + 24
    if pool is not None and tuple(pool[:6]) == (2, 2, 2, 2, 0, 0):
        plane = -(-((pool[6] + ((kh - 1) * dh + 1) // 2) * pool[7] + 8) // 8) * 8
        shifted = max(shifted, c * 2 * ((kw - 1) * dw + 2) * plane)
        if (kh, kw, geom[2], geom[3], dh, dw) == (3, 3, 1, 1, 1, 1):  # Winograd's tiling
            shifted = max(shifted, winograd_scratch(c, pool))
    return shifted, -(-o // 4) * 4 * (-(-(oh * ow) // 8) * 8) + 24
