# cython: language_level=3
"""Exact int8 GEMM with a fused dequantize + bias + activation epilogue (C in csrc/qgemm.h).

One quantized Dense layer, y = act(x @ W.T + b) with W (N, K) float32, in two compiled calls:

    w_q, w_scale = quantize_weights(W)          # once: int8 (N, K), float32 (N,) per channel
    w_packed, w_col_sums = pack_weights(w_q)    # once: int8 (ceil(N/16), ceil(K/4), 64), int32 (N,)
    quantize_rows(x, x_q, x_scale, x_zp)        # per batch: float32 (M, K) -> uint8 (M, K)
    (static activations: quantize_rows(x, x_q, x_scale, x_zp, True) with calibrated x_scale/x_zp)
    qlinear(x_q, x_scale, x_zp, w_packed, w_scale, w_col_sums, bias, act, out)   # (M, N)

Functions (every array C-contiguous; the wrappers check dtype, shape and contiguity and raise
TypeError / ValueError before any C runs):

quantize_weights(w) -> (w_q, w_scale)
    Symmetric per output channel: w_scale = max|w[n]| / 127 (1 if 0), w_q = rint(w / w_scale).
pack_weights(w_q) -> (w_packed, w_col_sums)
    packed[nb, g, 4 c + j] = w_q[16 nb + c, 4 g + j] (zero padded), the 4-byte groups vpdpbusd
    and AMX tiles read; w_col_sums[n] = w_q[n].sum() (int32) for the zero-point correction.
unpack_weights(w_packed, N, K) -> w_q
quantize_rows(x, q, scale, zero_point, fixed=False) -> q
    Asymmetric uint8: x float32 (M, K); q uint8 (M, K); scale float32 and zero_point int32
    of shape (M,) (per row) or (1,) (per tensor). Dynamic (fixed False; scale and zero_point
    are written): lo = min(0, min x), hi = max(0, max x), scale = (hi - lo) / 255 (1 if 0),
    zp = clip(rint(-lo / scale), 0, 255). Static (fixed True; they are read: finite scale > 0,
    zero_point in 0..255, else ValueError). Then q = clip(rint(x * (1 / scale)) + zp, 0, 255),
    float32 math, round half to even, +-inf and values beyond the range saturate, NaN -> 0;
    bit-identical on every ISA.
qlinear(x_q, x_scale, x_zero_point, w_packed, w_scale, w_col_sums, bias, act, out, nthreads=1)
    out = act(((x_q - zp) @ w_q.T) * (x_scale * w_scale) + bias), the sum exact in int32.
    x_q uint8 or int8 (M, K); x_scale float or float32 (1,)/(M,); x_zero_point int or int32
    (1,)/(M,); w_scale float32 (N,); w_col_sums int32 (N,); bias float32 (N,) or None;
    act 0 identity, 1 relu, 2 sigmoid, 3 tanh, 4 gelu (tanh approximation); out float32 (M, N).
qgemm_s32(a, w_packed, out, w_col_sums=None, nthreads=1)
    out = a @ w_q.T exactly, a uint8/int8 (M, K), out int32 (M, N); int8 a needs w_col_sums.
qconv2d_forward_chunks(x, w_packed, w_scale, w_col_sums, bias, act, geom, oh, ow, pool,
                       x_scale, x_zero_point, step, counter, xq, xt, rows, out, y)
    An int8 Conv2D over a batch, image by image (csrc/qconv_chunks.h): each image quantized
    once (its own scale, or the static one), unfolded channels last, one int8 GEMM, then
    transposed or max-pooled into y. Threads share `counter`, each with its own scratch.

Exactness needs |sum| < 2^31, guaranteed for K <= 65793 (larger K is refused). The GIL is
released; nthreads > 1 splits the output columns over up to nthreads threads of the
process's native pool (csrc/pool.h) when the product has at least PARALLEL_MIN_MACS = 2**21
multiply-adds (smaller ones stay on one thread: a hand-off costs more). qconv2d_forward_threads runs
qconv2d_forward_chunks' images as tasks of the same pool.

ISA paths, chosen once at import from CPUID and the OS: amx (AMX-INT8 tiles, Linux after
arch_prctl(ARCH_REQ_XCOMP_PERM)), avx512vnni, avxvnni, avx2 (exact: s16 widening + vpmaddwd),
portable. LEPTON_ISA=<name> in the environment forces a lower path (never a higher one than
the CPU has). isa() names the active path, supported_isas() the usable ones (best first),
set_isa(name) switches (tests run every path).
"""

import os
import warnings

import numpy as np

cimport numpy as cnp
from libc.float cimport FLT_MAX
from libc.stdint cimport int32_t, int64_t, uint8_t, int8_t

cnp.import_array()

cdef extern from "qgemm.h" nogil:
    ctypedef struct qg_args:
        const uint8_t *a
        const int8_t *b
        int64_t M, N, K
        int a_signed
        const float *xs
        int64_t xs_step
        const int32_t *zp
        int64_t zp_step
        const float *ws
        const int32_t *cs
        const float *bias
        int act
        float *outf
        int32_t *outi
    int QG_NISA
    int qg_init()
    int qg_set_isa(int isa)
    int qg_use_emulation(int isa)
    int qg_active
    int qg_cpu
    int qg_run(const qg_args *p, int nthreads)
    int64_t qg_plan(int64_t M, int64_t K, int64_t NB, int threads, int64_t *rows,
                    int64_t *width, int64_t *chunks)
    int qg_threads(int64_t M, int64_t K, int64_t N, int nthreads)
    long long QG_MIN_PARALLEL_MACS
    void qg_quantize_u8(const float *x, int64_t M, int64_t K, int per_row, int fixed,
                        uint8_t *q, float *scale, int32_t *zp)

include "pool_bind.pxi"  # qg_run's and the int8 convolution's threads: the shared pool
include "alloc_hook.pxi"  # _fail_allocations: tests of the out-of-memory paths

DEF MAX_SETS = 64

cdef extern from "qconv_chunks.h" nogil:
    ctypedef struct qc_geom:
        Py_ssize_t n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, step
    int qc_conv_chunks(const float *x, const qg_args *w, int fixed, float scale, int32_t zp,
                       const Py_ssize_t *pool, uint8_t *xq, uint8_t *xt, uint8_t *rows,
                       float *out, float *y, int64_t *counter, const qc_geom *g)

ISAS = ("portable", "avx2", "avxvnni", "avx512vnni", "amx")
K_MAX = 65793  # 255 * 128 * K < 2**31

qg_init()


def _task_plan(int64_t M, int64_t K, int64_t N, int threads):
    """The task grid qg_run cuts an (M, K) x (K, N) call into from PARALLEL_MIN_MACS on
    ``threads`` threads: (rows per row block, 16-column blocks per chunk, chunks, tasks)."""
    cdef int64_t rows = 0, width = 0, chunks = 0
    cdef int64_t tasks = qg_plan(M, K, (N + 15) // 16, threads, &rows, &width, &chunks)
    return rows, width, chunks, tasks


#: qlinear / qgemm_s32 run on one thread below this many multiply-adds (M K N)
PARALLEL_MIN_MACS = QG_MIN_PARALLEL_MACS


def _threads_for(int64_t M, int64_t K, int64_t N, int nthreads):
    """The threads qg_run splits an (M, K) x (K, N) call over when given ``nthreads``."""
    return qg_threads(M, K, N, nthreads)


def supported_isas():
    """Names of the paths usable on this CPU and OS, best first."""
    return [ISAS[i] for i in range(QG_NISA - 1, -1, -1) if qg_cpu & (1 << i)]


def isa():
    """Name of the active path."""
    return ISAS[qg_active]


def set_isa(name):
    """Use path ``name``, or the best usable one below it. Returns the active path's name."""
    if name not in ISAS:
        raise ValueError(f"unknown ISA {name!r}; choose one of {', '.join(ISAS)}")
    return ISAS[qg_set_isa(ISAS.index(name))]


def _use_emulation(name):
    """Test hook: run path ``name`` ('amx' or 'avxvnni') through its emulated / EVEX twin
    (needs AVX-512 VNNI); makes it active. Returns False when not possible here."""
    return bool(qg_use_emulation(ISAS.index(name)))


def _reset_isas():
    """Undo _use_emulation: detect the CPU again (the best path becomes active)."""
    qg_init()


_env = os.environ.get("LEPTON_ISA", "").strip().lower()
if _env:
    if _env in ISAS:
        set_isa(_env)
    else:
        warnings.warn(f"LEPTON_ISA={_env!r} ignored; choose one of {', '.join(ISAS)}",
                      RuntimeWarning, stacklevel=2)


# ------------------------------------------------------------------ validation helpers
cdef inline str _dt(cnp.ndarray a):
    return str(a.dtype)


cdef cnp.ndarray _arr(object a, str name, int typenum, int ndim, bint writeable=False):
    """a as an ndarray of dtype typenum and ndim dims, C-contiguous, else a clear error."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if cnp.PyArray_TYPE(arr) != typenum:
        raise TypeError(f"{name} must be {np.dtype(cnp.PyArray_DescrFromType(typenum))}, "
                        f"got {_dt(arr)}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{name} must be C-contiguous")
    if writeable and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{name} must be writeable")
    return arr


cdef cnp.ndarray _vec(object a, str name, int typenum, Py_ssize_t n):
    cdef cnp.ndarray arr = _arr(a, name, typenum, 1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {a.shape}")
    return arr


cdef cnp.ndarray _packed(object w_packed, Py_ssize_t N, Py_ssize_t K):
    cdef cnp.ndarray wp = _arr(w_packed, "w_packed", cnp.NPY_INT8, 3)
    if wp.shape[0] != (N + 15) // 16 or wp.shape[1] != (K + 3) // 4 or wp.shape[2] != 64:
        raise ValueError(f"w_packed has shape {w_packed.shape}; for K={K}, N={N} it must be "
                         f"({(N + 15) // 16}, {(K + 3) // 4}, 64) (see pack_weights)")
    return wp


cdef cnp.ndarray _activations(object a, str name):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    cdef int t = cnp.PyArray_TYPE(<cnp.ndarray>a)
    if t != cnp.NPY_UINT8 and t != cnp.NPY_INT8:
        raise TypeError(f"{name} must be uint8 or int8, got {a.dtype}")
    cdef cnp.ndarray arr = _arr(a, name, t, 2)
    if arr.shape[1] > K_MAX:
        raise ValueError(f"K={arr.shape[1]} > {K_MAX}: the int32 sums could overflow")
    return arr


cdef int _weights(qg_args *p, object w_packed, object w_scale, object w_col_sums, object bias,
                  int act, Py_ssize_t N, Py_ssize_t K) except -1:
    """Check a layer's int8 weights (N outputs, K inputs) and point p's weight fields at them
    (the caller holds the arrays for the call)."""
    cdef cnp.ndarray wp = _packed(w_packed, N, K)
    cdef cnp.ndarray ws = _vec(w_scale, "w_scale", cnp.NPY_FLOAT32, N)
    cdef cnp.ndarray cs = _vec(w_col_sums, "w_col_sums", cnp.NPY_INT32, N)
    cdef cnp.ndarray ba = None
    if bias is not None:
        ba = _vec(bias, "bias", cnp.NPY_FLOAT32, N)
    if act < 0 or act > 4:
        raise ValueError(f"act must be an activation code 0..4, got {act}")
    p.b = <const int8_t *>cnp.PyArray_DATA(wp)
    p.N = N
    p.K = K
    p.ws = <const float *>cnp.PyArray_DATA(ws)
    p.cs = <const int32_t *>cnp.PyArray_DATA(cs)
    p.bias = <const float *>cnp.PyArray_DATA(ba) if ba is not None else NULL
    p.act = act
    return 0


# ------------------------------------------------------------------ weights (Python level)
def quantize_weights(w):
    """Symmetric int8 per output channel: w float (N, K) -> (w_q int8 (N, K), w_scale f32 (N,)).

    w_scale[n] = max_k |w[n, k]| / 127 (1 when the row is 0); w_q = clip(rint(w / w_scale)).
    """
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"w must be 2-D (N, K), got shape {w.shape}")
    amax = np.abs(w).max(axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)
    scale = (amax / np.float32(127)).astype(np.float32)
    scale[scale == 0] = 1
    w_q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return w_q, scale


def pack_weights(w_q):
    """w_q int8 (N, K) -> (w_packed int8 (ceil(N/16), ceil(K/4), 64), w_col_sums int32 (N,)).

    w_packed[nb, g, 4 c + j] = w_q[16 nb + c, 4 g + j], zero padded; the one layout every ISA
    path reads (a 64-byte row is a zmm of 16 columns x 4 k, 16 rows an AMX B tile).
    """
    if not isinstance(w_q, np.ndarray) or w_q.dtype != np.int8 or w_q.ndim != 2:
        raise TypeError("w_q must be a 2-D int8 numpy array (N, K)")
    N, K = w_q.shape
    NB, G = (N + 15) // 16, (K + 3) // 4
    padded = np.zeros((NB * 16, G * 4), np.int8)
    padded[:N, :K] = w_q
    packed = np.ascontiguousarray(padded.reshape(NB, 16, G, 4).transpose(0, 2, 1, 3))
    return packed.reshape(NB, G, 64), w_q.sum(axis=1, dtype=np.int32)


def unpack_weights(w_packed, N, K):
    """Inverse of pack_weights: int8 (ceil(N/16), ceil(K/4), 64) -> w_q int8 (N, K)."""
    NB, G = w_packed.shape[0], w_packed.shape[1]
    w = w_packed.reshape(NB, G, 16, 4).transpose(0, 2, 1, 3).reshape(NB * 16, G * 4)
    return w[:N, :K].copy()


# ------------------------------------------------------------------ compiled entry points
def quantize_rows(x, q, scale, zero_point, bint fixed=False):
    """Asymmetric uint8 quantization of x float32 (M, K) into q uint8 (M, K).

    scale float32 / zero_point int32 of shape (M,): one pair per row; shape (1,): one for
    the tensor. fixed=False (dynamic): computed from x and written; fixed=True (static):
    given (calibrated) and only read. Returns q. See the module docstring for the rounding.
    """
    cdef cnp.ndarray xa = _arr(x, "x", cnp.NPY_FLOAT32, 2)
    cdef Py_ssize_t M = xa.shape[0], K = xa.shape[1]
    cdef cnp.ndarray qa = _arr(q, "q", cnp.NPY_UINT8, 2, True)
    if qa.shape[0] != M or qa.shape[1] != K:
        raise ValueError(f"q must have shape {x.shape}, got {q.shape}")
    cdef cnp.ndarray sa = _arr(scale, "scale", cnp.NPY_FLOAT32, 1, not fixed)
    cdef cnp.ndarray za = _arr(zero_point, "zero_point", cnp.NPY_INT32, 1, not fixed)
    cdef int per_row
    if sa.shape[0] == M and za.shape[0] == M:
        per_row = 1
    elif sa.shape[0] == 1 and za.shape[0] == 1:
        per_row = 0
    else:
        raise ValueError(f"scale and zero_point must both have shape ({M},) (per row) or (1,) "
                         f"(per tensor), got {scale.shape} and {zero_point.shape}")
    cdef float *sp = <float *>cnp.PyArray_DATA(sa)
    cdef int32_t *zpp = <int32_t *>cnp.PyArray_DATA(za)
    cdef Py_ssize_t i
    if fixed:
        for i in range(sa.shape[0]):
            # not (0 < s <= FLT_MAX) also catches NaN
            if not (0 < sp[i] <= FLT_MAX) or zpp[i] < 0 or zpp[i] > 255:
                raise ValueError(f"static quantization needs finite scale > 0 and zero_point in "
                                 f"0..255, got scale {sp[i]}, zero_point {zpp[i]}")
    if M == 0:
        if not per_row and not fixed:
            sp[0] = 1
            zpp[0] = 0
        return q
    cdef const float *xp = <const float *>cnp.PyArray_DATA(xa)
    cdef uint8_t *qp = <uint8_t *>cnp.PyArray_DATA(qa)
    with nogil:
        qg_quantize_u8(xp, M, K, per_row, fixed, qp, sp, zpp)
    return q


def qlinear(x_q, x_scale, x_zero_point, w_packed, w_scale, w_col_sums, bias, int act, out,
            int nthreads=1):
    """out = act(((x_q - zp) @ w_q.T) * (x_scale * w_scale) + bias), one compiled call.

    x_q uint8/int8 (M, K); x_scale float or float32 (1,)/(M,); x_zero_point int or int32
    (1,)/(M,); w_packed from pack_weights; w_scale float32 (N,); w_col_sums int32 (N,);
    bias float32 (N,) or None; act 0..4; out float32 (M, N). Returns out.
    """
    cdef cnp.ndarray xa = _activations(x_q, "x_q")
    cdef cnp.ndarray oa = _arr(out, "out", cnp.NPY_FLOAT32, 2, True)
    cdef Py_ssize_t M = xa.shape[0], K = xa.shape[1], N = oa.shape[1]
    if oa.shape[0] != M:
        raise ValueError(f"out has {oa.shape[0]} rows, x_q has {M}")
    cdef qg_args p
    _weights(&p, w_packed, w_scale, w_col_sums, bias, act, N, K)
    cdef float xs1
    cdef int32_t zp1
    cdef cnp.ndarray sa, za
    cdef bint signed_ = cnp.PyArray_TYPE(xa) == cnp.NPY_INT8
    if isinstance(x_scale, np.ndarray):
        sa = _arr(x_scale, "x_scale", cnp.NPY_FLOAT32, 1)
        if sa.shape[0] != M and sa.shape[0] != 1:
            raise ValueError(f"x_scale must have shape (1,) or ({M},), got {x_scale.shape}")
        p.xs = <const float *>cnp.PyArray_DATA(sa)
        p.xs_step = 1 if sa.shape[0] == M and M != 1 else 0
    else:
        xs1 = float(x_scale)
        p.xs = &xs1
        p.xs_step = 0
    if isinstance(x_zero_point, np.ndarray):
        za = _arr(x_zero_point, "x_zero_point", cnp.NPY_INT32, 1)
        if za.shape[0] != M and za.shape[0] != 1:
            raise ValueError(f"x_zero_point must have shape (1,) or ({M},), "
                             f"got {x_zero_point.shape}")
        p.zp = <const int32_t *>cnp.PyArray_DATA(za)
        p.zp_step = 1 if za.shape[0] == M and M != 1 else 0
    else:
        zp1 = int(x_zero_point)
        if not (-128 <= zp1 <= 127 if signed_ else 0 <= zp1 <= 255):
            raise ValueError(f"x_zero_point {zp1} out of range for {x_q.dtype}")
        p.zp = &zp1
        p.zp_step = 0
    p.a = <const uint8_t *>cnp.PyArray_DATA(xa)
    p.M = M
    p.a_signed = signed_
    p.outf = <float *>cnp.PyArray_DATA(oa)
    p.outi = NULL
    cdef int rc
    with nogil:
        rc = qg_run(&p, nthreads)
    if rc != 0:
        raise MemoryError("qlinear: no memory for the int8 GEMM's scratch")
    return out


def qgemm_s32(a, w_packed, out, w_col_sums=None, int nthreads=1):
    """out = a @ w_q.T exactly: a uint8/int8 (M, K), out int32 (M, N). Returns out.

    int8 a is read as a + 128 and corrected with w_col_sums (int32 (N,), required then).
    """
    cdef cnp.ndarray aa = _activations(a, "a")
    cdef cnp.ndarray oa = _arr(out, "out", cnp.NPY_INT32, 2, True)
    cdef Py_ssize_t M = aa.shape[0], K = aa.shape[1], N = oa.shape[1]
    if oa.shape[0] != M:
        raise ValueError(f"out has {oa.shape[0]} rows, a has {M}")
    cdef cnp.ndarray wp = _packed(w_packed, N, K)
    cdef bint signed_ = cnp.PyArray_TYPE(aa) == cnp.NPY_INT8
    cdef cnp.ndarray cs = None
    if w_col_sums is not None:
        cs = _vec(w_col_sums, "w_col_sums", cnp.NPY_INT32, N)
    elif signed_:
        raise ValueError("int8 a needs w_col_sums (from pack_weights)")
    cdef qg_args p
    cdef float one = 1.0
    cdef int32_t zero = 0
    p.a = <const uint8_t *>cnp.PyArray_DATA(aa)
    p.b = <const int8_t *>cnp.PyArray_DATA(wp)
    p.M = M
    p.N = N
    p.K = K
    p.a_signed = signed_
    p.xs = &one
    p.xs_step = 0
    p.zp = &zero
    p.zp_step = 0
    p.ws = NULL
    p.cs = <const int32_t *>cnp.PyArray_DATA(cs) if (cs is not None and signed_) else NULL
    p.bias = NULL
    p.act = 0
    p.outf = NULL
    p.outi = <int32_t *>cnp.PyArray_DATA(oa)
    cdef int rc
    with nogil:
        rc = qg_run(&p, nthreads)
    if rc != 0:
        raise MemoryError("qgemm_s32: no memory for the int8 GEMM's scratch")
    return out


# ------------------------------------------------------------------ int8 convolution
cdef Py_ssize_t _positive(object v, str name) except -1:
    cdef Py_ssize_t i = v
    if i < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return i


cdef struct _qconv_job:
    qg_args w
    qc_geom g
    Py_ssize_t pool[8]
    const Py_ssize_t *pp
    int fixed
    float s
    int32_t z
    const float *x
    float *y
    int64_t *counter
    int64_t own  # the threads version's counter
    uint8_t *xq[MAX_SETS]
    uint8_t *xt[MAX_SETS]
    uint8_t *rows[MAX_SETS]
    float *out[MAX_SETS]


cdef int _qconv_task(void *ctx, Py_ssize_t t) noexcept nogil:
    cdef _qconv_job *j = <_qconv_job *>ctx
    return qc_conv_chunks(j.x, &j.w, j.fixed, j.s, j.z, j.pp, j.xq[t], j.xt[t], j.rows[t],
                          j.out[t], j.y, j.counter, &j.g)


def qconv2d_forward_chunks(x, w_packed, w_scale, w_col_sums, bias, int act, tuple geom not None,
                           Py_ssize_t oh, Py_ssize_t ow, pool, x_scale, x_zero_point,
                           Py_ssize_t step, counter, xq, xt, rows, out, y):
    """y = the int8 convolution of x, image by image (see csrc/qconv_chunks.h).

    x float32 (N, C, H, W); w_packed from pack_weights(W.transpose(0, 2, 3, 1).reshape(F,
    K)), K = kh kw C (columns in (ky, kx, c) order); w_scale float32 (F,); w_col_sums int32
    (F,); bias float32 (F,) or None; act 0..4; geom (kh, kw, sh, sw, ph, pw, dh, dw); pool
    None or a max pool's (kh, kw, sh, sw, ph, pw, POH, POW) over the (oh, ow) output;
    x_scale / x_zero_point: None (dynamic: one pair per image) or float32 / int32 (1,)
    (static); step images per claim of counter (int64 (1,)); scratch xq, xt uint8 (C H W,),
    rows uint8 (P, K), out float32 (P, F), P = oh ow; y float32 (N, F, P) or (N, F, POH POW).
    Returns y.
    """
    cdef _qconv_job j
    cdef cnp.ndarray ca = _arr(counter, "counter", cnp.NPY_INT64, 1, True)
    if ca.shape[0] != 1:
        raise ValueError(f"counter must have shape (1,), got {counter.shape}")
    j.counter = <int64_t *>cnp.PyArray_DATA(ca)
    if _qconv_args(&j, 0, x, w_packed, w_scale, w_col_sums, bias, act, geom, oh, ow, pool,
                   x_scale, x_zero_point, step, xq, xt, rows, out, y):
        _qconv_run(&j, 1, 1)
    return y


def qconv2d_forward_threads(x, head, scratch, tail, int threads):
    """qconv2d_forward_chunks(x, *head, counter, *scratch[t], *tail) as len(scratch) tasks of
    the shared native pool (csrc/pool.h), at most ``threads`` at once, with one fresh
    counter: each task claims images from it with its own scratch set until none are left;
    each image's result depends on that image only. Returns y."""
    cdef _qconv_job j
    cdef Py_ssize_t sets = len(scratch), t
    cdef bint work = False
    if sets < 1 or sets > MAX_SETS:
        raise ValueError(f"qconv2d_forward_threads takes 1 to {MAX_SETS} scratch sets")
    j.own = 0
    j.counter = &j.own
    if len(head) != 12 or len(tail) != 1:
        raise ValueError("qconv2d_forward_threads: head of 12 arguments, tail of 1")
    for t in range(sets):
        xq, xt, rows, out = scratch[t]
        work = _qconv_args(&j, t, x, head[0], head[1], head[2], head[3], head[4], head[5],
                           head[6], head[7], head[8], head[9], head[10], head[11], xq, xt,
                           rows, out, tail[0])
    if work:
        _qconv_run(&j, sets, threads)
    return tail[0]


cdef int _qconv_run(_qconv_job *j, Py_ssize_t sets, int threads) except -1:
    cdef int rc
    with nogil:
        rc = lnn_parallel(_qconv_task, j, sets, threads)
    if rc != 0:
        raise MemoryError("qconv2d_forward: no memory for the image canvas or the int8 "
                          "GEMM's scratch")
    return 0


cdef int _qconv_args(_qconv_job *j, Py_ssize_t t, x, w_packed, w_scale, w_col_sums, bias,
                     int act, tuple geom, Py_ssize_t oh, Py_ssize_t ow, pool, x_scale,
                     x_zero_point, Py_ssize_t step, xq, xt, rows, out, y) except -1:
    """Checks the arguments of qconv2d_forward_chunks (without its counter) into j, scratch
    set t; 1 if there is work, 0 if not (no images or no filters)."""
    cdef cnp.ndarray xa = _arr(x, "x", cnp.NPY_FLOAT32, 4)
    cdef qc_geom *g = &j.g
    if len(geom) != 8:
        raise ValueError(f"geom must be (kh, kw, sh, sw, ph, pw, dh, dw), got {geom}")
    g.n, g.c, g.h, g.w = xa.shape[0], xa.shape[1], xa.shape[2], xa.shape[3]
    g.kh, g.kw = _positive(geom[0], "kh"), _positive(geom[1], "kw")
    g.sh, g.sw = _positive(geom[2], "sh"), _positive(geom[3], "sw")
    g.ph, g.pw = geom[4], geom[5]
    g.dh, g.dw = _positive(geom[6], "dh"), _positive(geom[7], "dw")
    if g.ph < 0 or g.pw < 0:
        raise ValueError(f"padding must be >= 0, got {geom[4:6]}")
    g.oh, g.ow = _positive(oh, "oh"), _positive(ow, "ow")
    g.step = _positive(step, "step")
    cdef Py_ssize_t img = g.c * g.h * g.w, P = g.oh * g.ow, K = g.kh * g.kw * g.c
    if K > K_MAX:
        raise ValueError(f"K={K} > {K_MAX}: the int32 sums could overflow")
    cdef cnp.ndarray oa = _arr(out, "out", cnp.NPY_FLOAT32, 2, True)
    cdef Py_ssize_t F = oa.shape[1]
    if oa.shape[0] != P:
        raise ValueError(f"out must have shape ({P}, F), got {out.shape}")
    _weights(&j.w, w_packed, w_scale, w_col_sums, bias, act, F, K)
    cdef Py_ssize_t *pl = j.pool
    cdef Py_ssize_t ysize = P
    cdef Py_ssize_t i
    if pool is not None:
        if len(pool) != 8:
            raise ValueError(f"pool must be (kh, kw, sh, sw, ph, pw, POH, POW), got {pool}")
        for i in range(8):
            pl[i] = pool[i]
            if pl[i] < (0 if i in (4, 5) else 1):
                raise ValueError(f"pool has a value out of range: {pool}")
        ysize = pl[6] * pl[7]
    for a, name in ((xq, "xq"), (xt, "xt")):
        if _arr(a, name, cnp.NPY_UINT8, 1, True).shape[0] != img:
            raise ValueError(f"{name} must have shape ({img},), got {a.shape}")
    cdef cnp.ndarray ra = _arr(rows, "rows", cnp.NPY_UINT8, 2, True)
    if ra.shape[0] != P or ra.shape[1] != K:
        raise ValueError(f"rows must have shape ({P}, {K}), got {rows.shape}")
    cdef cnp.ndarray ya = _arr(y, "y", cnp.NPY_FLOAT32, 3, True)
    if ya.shape[0] != g.n or ya.shape[1] != F or ya.shape[2] != ysize:
        raise ValueError(f"y must have shape ({g.n}, {F}, {ysize}), got {y.shape}")
    cdef int fixed = x_scale is not None
    cdef float s = 1
    cdef int32_t z = 0
    if fixed:
        s = _vec(x_scale, "x_scale", cnp.NPY_FLOAT32, 1)[0]
        z = _vec(x_zero_point, "x_zero_point", cnp.NPY_INT32, 1)[0]
        if not (0 < s <= FLT_MAX) or z < 0 or z > 255:
            raise ValueError(f"static quantization needs finite scale > 0 and zero_point in "
                             f"0..255, got scale {s}, zero_point {z}")
    elif x_zero_point is not None:
        raise ValueError("x_zero_point given without x_scale")
    j.x = <const float *>cnp.PyArray_DATA(xa)
    j.xq[t] = <uint8_t *>cnp.PyArray_DATA(<cnp.ndarray>xq)
    j.xt[t] = <uint8_t *>cnp.PyArray_DATA(<cnp.ndarray>xt)
    j.rows[t] = <uint8_t *>cnp.PyArray_DATA(ra)
    j.out[t] = <float *>cnp.PyArray_DATA(oa)
    j.y = <float *>cnp.PyArray_DATA(ya)
    j.pp = j.pool if pool is not None else NULL
    j.fixed, j.s, j.z = fixed, s, z
    return 0 if g.n == 0 or F == 0 else 1


# ------------------------------------------------------------------ int8 Dense chains
include "qgemv.pxi"
