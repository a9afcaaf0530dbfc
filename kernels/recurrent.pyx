# cython: language_level=3
"""Compiled twins of the recurrent-cell kernels in ``lepton_nn/backend/reference.py``.

One call per time step does the whole pointwise gate math of a batch (the GEMMs stay in
NumPy/BLAS). Same signatures and results as the reference; outputs are written into the
arrays given. The loops are C (``csrc/recurrent.h``; the float32 forward ones on AVX2 + FMA
in ``csrc/recurrent_simd.h``) and run without the GIL. For the inference runtime,
``recurrent_rows_forward`` runs a layer's whole sequence for a range of batch rows in one
call (``csrc/recurrent_rows.h``). Arguments are
``cnp.ndarray`` (or None where the reference allows it) because a typed memoryview costs
~190 ns per argument and these kernels are called 2 T times per training step. Nothing is
validated: ``lepton_nn/ops/recurrent.py`` builds every array (C-contiguous, one dtype).
"""

cimport numpy as cnp
import numpy as np

cnp.import_array()

cdef extern from "recurrent.h" nogil:
    void lnn_lstm_fwd_f32(const float *xz, const float *hz, const float *c_prev,
                          const float *h_prev, const float *mask, float *gates, float *c,
                          float *h, Py_ssize_t b, Py_ssize_t u)
    void lnn_lstm_fwd_f64(const double *xz, const double *hz, const double *c_prev,
                          const double *h_prev, const double *mask, double *gates, double *c,
                          double *h, Py_ssize_t b, Py_ssize_t u)
    void lnn_lstm_bwd_f32(const float *gy, const float *dh_rec, float *dh, float *dc,
                          const float *gates, const float *c, const float *c_prev,
                          const float *mask, float *dz, Py_ssize_t b, Py_ssize_t u)
    void lnn_lstm_bwd_f64(const double *gy, const double *dh_rec, double *dh, double *dc,
                          const double *gates, const double *c, const double *c_prev,
                          const double *mask, double *dz, Py_ssize_t b, Py_ssize_t u)
    void lnn_gru_fwd_f32(const float *xz, const float *hz, const float *bhh,
                         const float *h_prev, const float *mask, float *gates, float *h,
                         Py_ssize_t b, Py_ssize_t u)
    void lnn_gru_fwd_f64(const double *xz, const double *hz, const double *bhh,
                         const double *h_prev, const double *mask, double *gates, double *h,
                         Py_ssize_t b, Py_ssize_t u)
    void lnn_gru_bwd_f32(const float *gy, const float *dh_rec, float *dh, const float *gates,
                         const float *h_prev, const float *mask, float *dxz, float *dhz,
                         Py_ssize_t b, Py_ssize_t u)
    void lnn_gru_bwd_f64(const double *gy, const double *dh_rec, double *dh,
                         const double *gates, const double *h_prev, const double *mask,
                         double *dxz, double *dhz, Py_ssize_t b, Py_ssize_t u)
    void lnn_rnn_fwd_f32(const float *xz, const float *hz, const float *h_prev,
                         const float *mask, float *h, Py_ssize_t b, Py_ssize_t u)
    void lnn_rnn_fwd_f64(const double *xz, const double *hz, const double *h_prev,
                         const double *mask, double *h, Py_ssize_t b, Py_ssize_t u)
    void lnn_rnn_bwd_f32(const float *gy, const float *dh_rec, float *dh, const float *h,
                         const float *mask, float *dz, Py_ssize_t b, Py_ssize_t u)
    void lnn_rnn_bwd_f64(const double *gy, const double *dh_rec, double *dh, const double *h,
                         const double *mask, double *dz, Py_ssize_t b, Py_ssize_t u)


cdef extern from "recurrent_simd.h" nogil:
    # the float32 forward kernels on AVX2 + FMA where the CPU has them, else those above
    void lnn_lstm_fwd_f32_any(const float *xz, const float *hz, const float *c_prev,
                              const float *h_prev, const float *mask, float *gates, float *c,
                              float *h, Py_ssize_t b, Py_ssize_t u)
    void lnn_gru_fwd_f32_any(const float *xz, const float *hz, const float *bhh,
                             const float *h_prev, const float *mask, float *gates, float *h,
                             Py_ssize_t b, Py_ssize_t u)
    void lnn_rnn_fwd_f32_any(const float *xz, const float *hz, const float *h_prev,
                             const float *mask, float *h, Py_ssize_t b, Py_ssize_t u)
    void lnn_rr_set_simd(int on)


cdef inline bint _is_f32(cnp.ndarray a) except -1:
    """True for float32, False for float64; TypeError for anything else."""
    cdef int t = cnp.PyArray_TYPE(a)
    if t == cnp.NPY_FLOAT32:
        return True
    if t == cnp.NPY_FLOAT64:
        return False
    raise TypeError(f"recurrent kernels take float32 or float64 arrays, not {a.dtype}")


cdef inline void *_data(object a):
    """The data pointer of an ndarray, NULL for None."""
    if a is None:
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline Py_ssize_t _rows(cnp.ndarray a):
    return cnp.PyArray_DIMS(a)[0]


cdef inline Py_ssize_t _cols(cnp.ndarray a):
    return cnp.PyArray_DIMS(a)[1]


def lstm_step_forward(cnp.ndarray xz not None, cnp.ndarray hz not None,
                      cnp.ndarray c_prev not None, cnp.ndarray h_prev not None, mask,
                      cnp.ndarray gates not None, cnp.ndarray c not None,
                      cnp.ndarray h not None):
    """One LSTM step (gate order i, f, g, o): writes gates, c, h. Returns h."""
    cdef Py_ssize_t b = _rows(c), u = _cols(c)
    cdef void *m = _data(mask)
    cdef void *p0 = cnp.PyArray_DATA(xz)
    cdef void *p1 = cnp.PyArray_DATA(hz)
    cdef void *p2 = cnp.PyArray_DATA(c_prev)
    cdef void *p3 = cnp.PyArray_DATA(h_prev)
    cdef void *p4 = cnp.PyArray_DATA(gates)
    cdef void *p5 = cnp.PyArray_DATA(c)
    cdef void *p6 = cnp.PyArray_DATA(h)
    if _is_f32(c):
        with nogil:
            lnn_lstm_fwd_f32_any(<float *>p0, <float *>p1, <float *>p2, <float *>p3, <float *>m,
                             <float *>p4, <float *>p5, <float *>p6, b, u)
    else:
        with nogil:
            lnn_lstm_fwd_f64(<double *>p0, <double *>p1, <double *>p2, <double *>p3,
                             <double *>m, <double *>p4, <double *>p5, <double *>p6, b, u)
    return h


def lstm_step_backward(gy, cnp.ndarray dh_rec not None, cnp.ndarray dh not None,
                       cnp.ndarray dc not None, cnp.ndarray gates not None,
                       cnp.ndarray c not None, cnp.ndarray c_prev not None, mask,
                       cnp.ndarray dz not None):
    """Back through one LSTM step: writes dz, dh, dc. Returns dz."""
    cdef Py_ssize_t b = _rows(c), u = _cols(c)
    cdef void *g = _data(gy)
    cdef void *m = _data(mask)
    cdef void *p0 = cnp.PyArray_DATA(dh_rec)
    cdef void *p1 = cnp.PyArray_DATA(dh)
    cdef void *p2 = cnp.PyArray_DATA(dc)
    cdef void *p3 = cnp.PyArray_DATA(gates)
    cdef void *p4 = cnp.PyArray_DATA(c)
    cdef void *p5 = cnp.PyArray_DATA(c_prev)
    cdef void *p6 = cnp.PyArray_DATA(dz)
    if _is_f32(c):
        with nogil:
            lnn_lstm_bwd_f32(<float *>g, <float *>p0, <float *>p1, <float *>p2, <float *>p3,
                             <float *>p4, <float *>p5, <float *>m, <float *>p6, b, u)
    else:
        with nogil:
            lnn_lstm_bwd_f64(<double *>g, <double *>p0, <double *>p1, <double *>p2,
                             <double *>p3, <double *>p4, <double *>p5, <double *>m,
                             <double *>p6, b, u)
    return dz


def gru_step_forward(cnp.ndarray xz not None, cnp.ndarray hz not None, bhh,
                     cnp.ndarray h_prev not None, mask, cnp.ndarray gates not None,
                     cnp.ndarray h not None):
    """One GRU step (reset after the matmul; gates z, r, n): writes gates, h. Returns h."""
    cdef Py_ssize_t b = _rows(h), u = _cols(h)
    cdef void *bb = _data(bhh)
    cdef void *m = _data(mask)
    cdef void *p0 = cnp.PyArray_DATA(xz)
    cdef void *p1 = cnp.PyArray_DATA(hz)
    cdef void *p2 = cnp.PyArray_DATA(h_prev)
    cdef void *p3 = cnp.PyArray_DATA(gates)
    cdef void *p4 = cnp.PyArray_DATA(h)
    if _is_f32(h):
        with nogil:
            lnn_gru_fwd_f32_any(<float *>p0, <float *>p1, <float *>bb, <float *>p2, <float *>m,
                            <float *>p3, <float *>p4, b, u)
    else:
        with nogil:
            lnn_gru_fwd_f64(<double *>p0, <double *>p1, <double *>bb, <double *>p2,
                            <double *>m, <double *>p3, <double *>p4, b, u)
    return h


def gru_step_backward(gy, cnp.ndarray dh_rec not None, cnp.ndarray dh not None,
                      cnp.ndarray gates not None, cnp.ndarray h_prev not None, mask,
                      cnp.ndarray dxz not None, cnp.ndarray dhz not None):
    """Back through one GRU step: writes dxz, dhz, dh. Returns dxz."""
    cdef Py_ssize_t b = _rows(h_prev), u = _cols(h_prev)
    cdef void *g = _data(gy)
    cdef void *m = _data(mask)
    cdef void *p0 = cnp.PyArray_DATA(dh_rec)
    cdef void *p1 = cnp.PyArray_DATA(dh)
    cdef void *p2 = cnp.PyArray_DATA(gates)
    cdef void *p3 = cnp.PyArray_DATA(h_prev)
    cdef void *p4 = cnp.PyArray_DATA(dxz)
    cdef void *p5 = cnp.PyArray_DATA(dhz)
    if _is_f32(h_prev):
        with nogil:
            lnn_gru_bwd_f32(<float *>g, <float *>p0, <float *>p1, <float *>p2, <float *>p3,
                            <float *>m, <float *>p4, <float *>p5, b, u)
    else:
        with nogil:
            lnn_gru_bwd_f64(<double *>g, <double *>p0, <double *>p1, <double *>p2,
                            <double *>p3, <double *>m, <double *>p4, <double *>p5, b, u)
    return dxz


def rnn_step_forward(cnp.ndarray xz not None, cnp.ndarray hz not None,
                     cnp.ndarray h_prev not None, mask, cnp.ndarray h not None):
    """One Elman step h = tanh(xz + hz): writes h. Returns h."""
    cdef Py_ssize_t b = _rows(h), u = _cols(h)
    cdef void *m = _data(mask)
    cdef void *p0 = cnp.PyArray_DATA(xz)
    cdef void *p1 = cnp.PyArray_DATA(hz)
    cdef void *p2 = cnp.PyArray_DATA(h_prev)
    cdef void *p3 = cnp.PyArray_DATA(h)
    if _is_f32(h):
        with nogil:
            lnn_rnn_fwd_f32_any(<float *>p0, <float *>p1, <float *>p2, <float *>m, <float *>p3,
                            b, u)
    else:
        with nogil:
            lnn_rnn_fwd_f64(<double *>p0, <double *>p1, <double *>p2, <double *>m,
                            <double *>p3, b, u)
    return h


def rnn_step_backward(gy, cnp.ndarray dh_rec not None, cnp.ndarray dh not None,
                      cnp.ndarray h not None, mask, cnp.ndarray dz not None):
    """Back through one Elman step: writes dz, dh. Returns dz."""
    cdef Py_ssize_t b = _rows(h), u = _cols(h)
    cdef void *g = _data(gy)
    cdef void *m = _data(mask)
    cdef void *p0 = cnp.PyArray_DATA(dh_rec)
    cdef void *p1 = cnp.PyArray_DATA(dh)
    cdef void *p2 = cnp.PyArray_DATA(h)
    cdef void *p3 = cnp.PyArray_DATA(dz)
    if _is_f32(h):
        with nogil:
            lnn_rnn_bwd_f32(<float *>g, <float *>p0, <float *>p1, <float *>p2, <float *>m,
                            <float *>p3, b, u)
    else:
        with nogil:
            lnn_rnn_bwd_f64(<double *>g, <double *>p0, <double *>p1, <double *>p2,
                            <double *>m, <double *>p3, b, u)
    return dz


# -- a layer's whole sequence for a range of batch rows: the inference runtime, and the LSTM's
# training forward (with each step's gates) (csrc/recurrent_rows.h)

cdef extern from "recurrent_rows.h" nogil:
    int lnn_rec_rows_available()
    void lnn_rec_rows_fwd_f32(int cell, const float *x, const float *wp, float *h, float *c,
                              const float *mask, float *gates, Py_ssize_t b, Py_ssize_t kx,
                              Py_ssize_t u, Py_ssize_t t, Py_ssize_t hn, Py_ssize_t cn,
                              Py_ssize_t r0, Py_ssize_t r1, int reverse, Py_ssize_t kp)
    void lnn_rec_rows_steps_f32(int cell, const float *x, const float *wp, float *h, float *c,
                                const float *mask, float *gates, Py_ssize_t b, Py_ssize_t kx,
                                Py_ssize_t u, Py_ssize_t t, Py_ssize_t hn, Py_ssize_t cn,
                                Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t i0, Py_ssize_t i1,
                                int reverse, Py_ssize_t kp)

_CELLS = {"LSTM": 0, "GRU": 1, "SimpleRNN": 2}


def use_simd(bint on):
    """Let the float32 forward kernels take their AVX2 loops where the CPU has them (True,
    the default), or not (False: the plain C step loops, and no recurrent_rows_forward;
    for tests on an AVX2 machine)."""
    lnn_rr_set_simd(on)


def rows_available():
    """Whether recurrent_rows_forward runs here (float32 on a CPU with AVX2 and FMA)."""
    return bool(lnn_rec_rows_available())


def recurrent_rows_forward(str cell, cnp.ndarray x not None, cnp.ndarray w_packed not None,
                           cnp.ndarray h not None, c, mask, Py_ssize_t r0, Py_ssize_t r1,
                           bint reverse, gates=None):
    """All steps of one direction of an LSTM / GRU / SimpleRNN for batch rows r0 .. r1-1
    (the twin in reference_recurrent.py says what is read and written; w_packed from its
    pack_recurrent). float32 only, and only where rows_available(): the backend checks.
    Arrays C-contiguous, built by the runtime's plan or the training op: nothing is
    validated here."""
    cdef int code = _CELLS[cell]
    cdef Py_ssize_t hn = cnp.PyArray_DIMS(h)[0], b = cnp.PyArray_DIMS(h)[1]
    cdef Py_ssize_t u = cnp.PyArray_DIMS(h)[2], t = cnp.PyArray_DIMS(x)[0]
    cdef Py_ssize_t kx = cnp.PyArray_DIMS(x)[2], kp = cnp.PyArray_DIMS(w_packed)[1]
    cdef Py_ssize_t cn = 2 if c is None else cnp.PyArray_DIMS(<cnp.ndarray>c)[0]
    cdef float *pc = <float *>_data(c)
    cdef float *pm = <float *>_data(mask)
    cdef float *pg = <float *>_data(gates)
    cdef float *p0 = <float *>cnp.PyArray_DATA(x)
    cdef float *p1 = <float *>cnp.PyArray_DATA(w_packed)
    cdef float *p2 = <float *>cnp.PyArray_DATA(h)
    with nogil:
        lnn_rec_rows_fwd_f32(code, p0, p1, p2, pc, pm, pg, b, kx, u, t, hn, cn, r0, r1,
                             reverse, kp)


# -- recurrent_rows_forward over ranges of rows on the shared native pool (csrc/pool.h) ------

include "pool_bind.pxi"

cdef extern from "rows_share.h" nogil:
    ctypedef struct lnn_rows_share:
        pass
    ctypedef void (*lnn_rs_steps_fn)(void *ctx, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t i0,
                                     Py_ssize_t i1) noexcept nogil
    void lnn_rows_share_init(lnn_rows_share *s, const Py_ssize_t *bounds, Py_ssize_t n,
                             Py_ssize_t t, Py_ssize_t parts)
    Py_ssize_t lnn_rows_share_run(lnn_rows_share *s, lnn_rs_steps_fn fn, void *ctx)
    ctypedef struct lnn_rs_rec:
        pass
    long lnn_rows_share_trace(lnn_rs_rec *buf, long cap)
    long long LNN_RS_TICKS()

cdef struct _rows_job:
    int cell
    const float *x
    const float *wp
    float *h
    float *c
    const float *mask
    Py_ssize_t b, kx, u, t, hn, kp
    float *gates
    Py_ssize_t cn
    int reverse
    lnn_rows_share *share


_trace_buf = None  # the array the trace writes into (kept alive while it does)


def rows_trace(buf):
    """Record the timeline of the next recurrent_rows_threads calls into ``buf`` (int64,
    C-contiguous (cap, 6): who, group, step, t0, t1 in time-stamp-counter ticks, cpu; step
    -1 a participant joining, -2 leaving: t0 its join, cpu its thread's CPU time in ns since
    then), or stop (None). Returns the records written since
    the last call. Not while a call runs (benchmarks/recurrent_timeline.py)."""
    global _trace_buf
    cdef cnp.ndarray a
    cdef long n
    if buf is None:
        n = lnn_rows_share_trace(NULL, 0)
    else:
        a = buf
        if (cnp.PyArray_TYPE(a) != cnp.NPY_INT64 or not cnp.PyArray_IS_C_CONTIGUOUS(a)
                or cnp.PyArray_NDIM(a) != 2 or cnp.PyArray_DIMS(a)[1] != 6):
            raise ValueError("the trace buffer must be a C-contiguous int64 array (cap, 6)")
        n = lnn_rows_share_trace(<lnn_rs_rec *>cnp.PyArray_DATA(a), cnp.PyArray_DIMS(a)[0])
    _trace_buf = buf
    return n


def ticks():
    """The time-stamp counter now (0 off x86): rows_trace's clock."""
    return LNN_RS_TICKS()


cdef void _rows_steps(void *ctx, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t i0,
                      Py_ssize_t i1) noexcept nogil:
    cdef _rows_job *j = <_rows_job *>ctx
    lnn_rec_rows_steps_f32(j.cell, j.x, j.wp, j.h, j.c, j.mask, j.gates, j.b, j.kx, j.u, j.t,
                           j.hn, j.cn, r0, r1, i0, i1, j.reverse, j.kp)


cdef int _rows_task(void *ctx, Py_ssize_t i) noexcept nogil:
    cdef _rows_job *j = <_rows_job *>ctx
    lnn_rows_share_run(j.share, _rows_steps, ctx)
    return 0


def recurrent_rows_threads(str cell, cnp.ndarray x not None, cnp.ndarray w_packed not None,
                           cnp.ndarray h not None, c, mask, cnp.ndarray bounds not None,
                           bint reverse, int threads, gates=None, Py_ssize_t parts=2):
    """recurrent_rows_forward(cell, x, w_packed, h, c, mask, bounds[i], bounds[i + 1],
    reverse, gates) for every range i, on up to ``threads`` threads of the shared native
    pool (bounds int64 (R + 1,), increasing from 0 to the batch). The threads share the
    ranges, each cut into ``parts`` groups of rows, step by step (csrc/rows_share.h): each
    runs one step of a group nobody is running, its own groups while no other lags behind,
    so a thread that starts late or runs slow hands groups to the other from the step they
    are at. Rows are independent: any split and any thread gives the same bits. Arrays as
    recurrent_rows_forward's."""
    cdef _rows_job j
    cdef lnn_rows_share share
    cdef Py_ssize_t r = cnp.PyArray_SIZE(bounds) - 1
    if (cnp.PyArray_TYPE(bounds) != cnp.NPY_INT64 or not cnp.PyArray_IS_C_CONTIGUOUS(bounds)
            or r < 1 or sizeof(Py_ssize_t) != 8):
        raise ValueError("bounds must be a C-contiguous int64 array of at least 2 values")
    j.cell = _CELLS[cell]
    j.hn, j.b, j.u = cnp.PyArray_DIMS(h)[0], cnp.PyArray_DIMS(h)[1], cnp.PyArray_DIMS(h)[2]
    j.cn = 2 if c is None else cnp.PyArray_DIMS(<cnp.ndarray>c)[0]
    j.gates = <float *>_data(gates)
    j.t, j.kx = cnp.PyArray_DIMS(x)[0], cnp.PyArray_DIMS(x)[2]
    j.kp = cnp.PyArray_DIMS(w_packed)[1]
    j.c, j.mask = <float *>_data(c), <const float *>_data(mask)
    j.x = <const float *>cnp.PyArray_DATA(x)
    j.wp = <const float *>cnp.PyArray_DATA(w_packed)
    j.h = <float *>cnp.PyArray_DATA(h)
    j.reverse = reverse
    j.share = &share
    if threads <= 1:
        parts = 1  # groups balance threads; one thread alone re-read W_hh once a group a step
    with nogil:
        lnn_rows_share_init(&share, <const Py_ssize_t *>cnp.PyArray_DATA(bounds), r, j.t,
                            parts)
        lnn_parallel(_rows_task, &j, threads if threads > 1 else 1, threads)


# -- the same for int8 weights (csrc/recurrent_q8.h) ------------------------------------------

from libc.stdint cimport int16_t, int32_t, uint8_t
from libc.stdlib cimport free

include "alloc_hook.pxi"  # _fail_allocations: tests of the out-of-memory path

cdef extern from "alloc.h" nogil:
    void *lnn_malloc(size_t n)

cdef extern from "recurrent_q8.h" nogil:
    int lnn_rec_q8_available()
    void lnn_rec_q8_fwd(int cell, const uint8_t *xq, const float *xs, const int32_t *xzp,
                        Py_ssize_t xstep, const int16_t *wq, const float *wf, float *h,
                        float *c, const float *mask, Py_ssize_t b, Py_ssize_t f, Py_ssize_t u,
                        Py_ssize_t t, Py_ssize_t hn, Py_ssize_t r0, Py_ssize_t r1, int reverse,
                        int16_t *d, float *sc)


def q8_available():
    """Whether recurrent_q8_forward runs here (a CPU with AVX2 and FMA)."""
    return bool(lnn_rec_q8_available())


def recurrent_q8_forward(str cell, cnp.ndarray xq not None, cnp.ndarray xs not None,
                         cnp.ndarray xzp not None, tuple packed, cnp.ndarray h not None, c,
                         mask, Py_ssize_t r0, Py_ssize_t r1, bint reverse):
    """All steps of one int8 direction of an LSTM / GRU / SimpleRNN for batch rows r0 ..
    r1-1 (the twin, lepton_nn/backend/recurrent_q8.py, says what is read and written;
    packed from its pack_recurrent_q8). Only where q8_available(): the backend checks.
    Arrays C-contiguous, built by the runtime's plan: nothing is validated here. One range
    of recurrent_q8_threads, on the calling thread."""
    recurrent_q8_threads(cell, xq, xs, xzp, packed, h, c, mask, np.array([r0, r1], np.int64),
                         reverse, 1)


# -- recurrent_q8_forward over ranges of rows on the shared native pool ----------------------

cdef struct _q8_job:
    int cell
    const uint8_t *xq
    const float *xs
    const int32_t *xzp
    Py_ssize_t xstep
    const int16_t *wq
    const float *wf
    float *h
    float *c
    const float *mask
    Py_ssize_t b, f, u, t, hn, kp
    int reverse
    const Py_ssize_t *bounds


cdef int _q8_task(void *ctx, Py_ssize_t i) noexcept nogil:
    cdef _q8_job *j = <_q8_job *>ctx
    cdef Py_ssize_t r0 = j.bounds[i], r1 = j.bounds[i + 1], nr = r1 - r0
    if nr <= 0:
        return 0
    # each task its own scratch: the h rows widened (nr, 2 kp) and their scales (2 nr)
    cdef int16_t *d = <int16_t *>lnn_malloc(<size_t>(nr * j.kp * 2) * sizeof(int16_t))
    cdef float *sc = <float *>lnn_malloc(<size_t>(2 * nr) * sizeof(float))
    if d == NULL or sc == NULL:
        free(d)
        free(sc)
        return 1
    lnn_rec_q8_fwd(j.cell, j.xq, j.xs, j.xzp, j.xstep, j.wq, j.wf, j.h, j.c, j.mask, j.b, j.f,
                   j.u, j.t, j.hn, r0, r1, j.reverse, d, sc)
    free(d)
    free(sc)
    return 0


def recurrent_q8_threads(str cell, cnp.ndarray xq not None, cnp.ndarray xs not None,
                         cnp.ndarray xzp not None, tuple packed, cnp.ndarray h not None, c,
                         mask, cnp.ndarray bounds not None, bint reverse, int threads):
    """recurrent_q8_forward(cell, xq, xs, xzp, packed, h, c, mask, bounds[i], bounds[i + 1],
    reverse) for every range i, as tasks of the shared native pool, at most ``threads`` at
    once (bounds int64 (R + 1,), increasing from 0 to the batch). Rows are independent: any
    split gives the same bits. Only where q8_available(); arrays as recurrent_q8_forward's."""
    cdef _q8_job j
    cdef Py_ssize_t r = cnp.PyArray_SIZE(bounds) - 1
    if (cnp.PyArray_TYPE(bounds) != cnp.NPY_INT64 or not cnp.PyArray_IS_C_CONTIGUOUS(bounds)
            or r < 1 or sizeof(Py_ssize_t) != 8):
        raise ValueError("bounds must be a C-contiguous int64 array of at least 2 values")
    cdef cnp.ndarray wq = packed[0], wf = packed[1]
    j.cell = _CELLS[cell]
    j.hn, j.b, j.u = cnp.PyArray_DIMS(h)[0], cnp.PyArray_DIMS(h)[1], cnp.PyArray_DIMS(h)[2]
    j.t, j.f = cnp.PyArray_DIMS(xq)[0], cnp.PyArray_DIMS(xq)[2]
    j.kp = cnp.PyArray_DIMS(wq)[1]
    j.xstep = 0 if cnp.PyArray_DIMS(xs)[0] == 1 else 1
    j.xq = <const uint8_t *>cnp.PyArray_DATA(xq)
    j.xs = <const float *>cnp.PyArray_DATA(xs)
    j.xzp = <const int32_t *>cnp.PyArray_DATA(xzp)
    j.wq = <const int16_t *>cnp.PyArray_DATA(wq)
    j.wf = <const float *>cnp.PyArray_DATA(wf)
    j.h = <float *>cnp.PyArray_DATA(h)
    j.c, j.mask = <float *>_data(c), <const float *>_data(mask)
    j.reverse = reverse
    j.bounds = <const Py_ssize_t *>cnp.PyArray_DATA(bounds)
    cdef int rc
    with nogil:
        rc = lnn_parallel(_q8_task, &j, r, threads)
    if rc:
        raise MemoryError("recurrent_q8_threads: no memory for a range's scratch")


# -- back through a whole LSTM sequence for ranges of batch rows, for training --------------
# (csrc/recurrent_back.h)

cdef extern from "recurrent_back.h" nogil:
    int lnn_rec_back_available()
    void lnn_rec_lstm_bwd_f32(const float *gy, const float *gates, const float *c,
                              const float *wt, const float *mask, float *dh, float *dc,
                              float *dz, Py_ssize_t b, Py_ssize_t u, Py_ssize_t t,
                              Py_ssize_t r0, Py_ssize_t r1, int reverse)


def back_available():
    """Whether lstm_rows_backward runs here (float32 on a CPU with AVX2 and FMA)."""
    return bool(lnn_rec_back_available())


cdef struct _back_job:
    const float *gy
    const float *gates
    const float *c
    const float *wt
    const float *mask
    float *dh
    float *dc
    float *dz
    Py_ssize_t b, u, t
    int reverse
    const Py_ssize_t *bounds


cdef int _back_task(void *ctx, Py_ssize_t i) noexcept nogil:
    cdef _back_job *j = <_back_job *>ctx
    lnn_rec_lstm_bwd_f32(j.gy, j.gates, j.c, j.wt, j.mask, j.dh, j.dc, j.dz, j.b, j.u, j.t,
                         j.bounds[i], j.bounds[i + 1], j.reverse)
    return 0


def lstm_back_threads(gy, cnp.ndarray gates not None, cnp.ndarray c not None,
                      cnp.ndarray w_back not None, mask, cnp.ndarray dh not None,
                      cnp.ndarray dc not None, cnp.ndarray dz not None,
                      cnp.ndarray bounds not None, bint reverse, int threads):
    """lstm_rows_backward(gy, gates, c, w_back, mask, dh, dc, dz, bounds[i], bounds[i + 1],
    reverse) (the twin in backend/recurrent_train.py says what is read and written) for
    every range i, as tasks of the shared native pool, at most ``threads`` at once. Rows are
    independent: any split and any thread gives the same bits. float32, C-contiguous, only
    where back_available(): the backend checks; nothing else is validated here."""
    cdef _back_job j
    cdef Py_ssize_t r = cnp.PyArray_SIZE(bounds) - 1
    if (cnp.PyArray_TYPE(bounds) != cnp.NPY_INT64 or not cnp.PyArray_IS_C_CONTIGUOUS(bounds)
            or r < 1 or sizeof(Py_ssize_t) != 8):
        raise ValueError("bounds must be a C-contiguous int64 array of at least 2 values")
    j.t, j.b = cnp.PyArray_DIMS(gates)[0], cnp.PyArray_DIMS(gates)[1]
    j.u = cnp.PyArray_DIMS(dh)[1]
    j.gy, j.mask = <const float *>_data(gy), <const float *>_data(mask)
    j.gates = <const float *>cnp.PyArray_DATA(gates)
    j.c = <const float *>cnp.PyArray_DATA(c)
    j.wt = <const float *>cnp.PyArray_DATA(w_back)
    j.dh = <float *>cnp.PyArray_DATA(dh)
    j.dc = <float *>cnp.PyArray_DATA(dc)
    j.dz = <float *>cnp.PyArray_DATA(dz)
    j.reverse = reverse
    j.bounds = <const Py_ssize_t *>cnp.PyArray_DATA(bounds)
    with nogil:
        lnn_parallel(_back_task, &j, r, threads)
