# cython: language_level=3
"""The one native thread pool of the process (``csrc/pool.h``), shared by every extension.

The other compiled modules bind :data:`api` (a capsule of the pool's C entry points) at
import, so all their parallel regions run on the same workers. From Python: the workers'
idle spin (:func:`set_spin_us`), the rule that keeps a job's threads on different CPUs
(:func:`set_apart`), counters (:func:`stats`), the workers' thread ids (:func:`worker_ids`),
a record of every job (:func:`start_trace`, :func:`stop_trace`: when worker 1 joined it and
on which CPU), and :func:`run_test`, a job of trivial tasks for the tests (threads, errors,
fork), and :func:`run_test_phases`, a job of several phases whose tasks read the whole
previous phase (the barrier between them).
"""

from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

cimport numpy as cnp

cnp.import_array()

cdef extern from "pool_impl.h" nogil:
    ctypedef int (*lnn_task_fn)(void *ctx, Py_ssize_t task) noexcept nogil
    ctypedef struct lnn_pool_api_t:
        int version
    ctypedef struct lnn_phase_t:
        lnn_task_fn fn
        void *ctx
        Py_ssize_t tasks
    const lnn_pool_api_t lnn_pool_api_impl
    int LNN_POOL_THREADED
    int lnn_pool_run(lnn_task_fn fn, void *ctx, Py_ssize_t tasks, int threads)
    int lnn_pool_run_phases(const lnn_phase_t *phases, int count, int threads)
    void lnn_pool_set_spin(long long ns)
    void lnn_pool_set_wait(long long ns)
    void lnn_pool_set_apart(int on)
    void lnn_pool_wake()
    long long lnn_pool_stat(int which)
    int lnn_pool_workers()
    long lnn_pool_worker_tid(int t)
    ctypedef struct lnn_pool_rec_t:
        int64_t post_ns
        int64_t claim_ns
        int64_t job_ns
        int32_t caller_cpu
        int32_t worker_cpu
    long lnn_pool_set_trace(lnn_pool_rec_t *buf, long cap)

#: the pool's C entry points, bound by the other extension modules at import
api = PyCapsule_New(<void *>&lnn_pool_api_impl, b"lepton_nn.pool", NULL)

# A worker spins this long for the next job before it sleeps (see set_spin_us; the
# LEPTON_POOL_SPIN_US environment variable overrides it at import). Long enough to bridge
# every gap between the parallel regions of a burst of calls, short enough that an idle
# process stops spending CPU 5 ms after its last call (ONNX Runtime's workers burn ~50 ms a
# second after a run). benchmarks/bench_pool_spin.py measures it: on the 2-vCPU machine at
# load 8-9, rounds of 0.02 s of back-to-back calls after a 0.3 s pause (batch 64, 2 threads)
# saw the worker go to sleep 0.2-0.4 times a round at 5000 us, 1.8-3 at 1000 us and 3-16
# at 100 us (the MLP, LSTM and CNN of benchmarks/bench_vs_ort.py).
DEFAULT_SPIN_US = 5000
# A caller spins this long for its job's last tasks before it sleeps (see set_wait_us).
DEFAULT_WAIT_US = 1000


def set_spin_us(double us):
    """Let idle workers spin ``us`` microseconds for the next job before they sleep."""
    if not us >= 0:
        raise ValueError(f"spin must be >= 0 microseconds, got {us!r}")
    lnn_pool_set_spin(<long long>(us * 1000))


def set_wait_us(double us):
    """Let a caller spin ``us`` microseconds for its job's last tasks before it sleeps."""
    if not us >= 0:
        raise ValueError(f"wait must be >= 0 microseconds, got {us!r}")
    lnn_pool_set_wait(<long long>(us * 1000))


def set_apart(bint on):
    """Keep a job's threads on different CPUs (on by default; the LEPTON_POOL_APART=0
    environment variable turns it off at import): after posting a job, the caller moves a
    worker that last ran on its own CPU off that CPU (the worker's CPU set less the
    caller's CPU) until the worker has slept for a second, when it takes its own set back;
    only when the worker may run on at least as many CPUs as the job has threads. Without
    it, Linux was seen to keep a worker queued on its caller's vCPU for thousands of calls
    while the other vCPU idled: 2 threads as slow as 1 (benchmarks/bench_pool_dist.py)."""
    lnn_pool_set_apart(on)


def _apart_setting():
    import os

    return os.environ.get("LEPTON_POOL_APART", "").strip() not in ("0", "off", "no", "false")


def wake():
    """Wake the sleeping workers (no job): a call about to run parallel regions does this
    first, so that a core that went idle (on a virtual machine: a halted vCPU, slow to come
    back) is running again when the first region starts."""
    lnn_pool_wake()


def stats():
    """Counters since the process started: jobs run on the pool, jobs run on their caller
    alone (busy pool, nested, one thread), tasks run by workers, times a worker went to sleep,
    phases of the pool's jobs of more than one phase, jobs whose worker 1 ran its first task
    on the CPU the caller posted from (``shared_cpu``), workers moved off their caller's CPU
    (``nudges``), moved workers that gave their CPUs back because other threads kept
    preempting them there (``backoffs``), and workers started."""
    return {"jobs": lnn_pool_stat(0), "alone": lnn_pool_stat(1),
            "worker_tasks": lnn_pool_stat(2), "sleeps": lnn_pool_stat(3),
            "phases": lnn_pool_stat(6), "shared_cpu": lnn_pool_stat(7),
            "nudges": lnn_pool_stat(8), "backoffs": lnn_pool_stat(10),
            "apart": bool(lnn_pool_stat(9)),
            "workers": lnn_pool_workers(), "spin_us": lnn_pool_stat(4) / 1000.0,
            "wait_us": lnn_pool_stat(5) / 1000.0,
            "threaded": bool(LNN_POOL_THREADED)}


def worker_ids():
    """The native thread ids of the started workers (as in /proc/self/task), in order."""
    ids = [lnn_pool_worker_tid(t) for t in range(1, lnn_pool_workers() + 1)]
    return [i for i in ids if i]


# -- a record of every job, for the benchmarks ----------------------------------------------

cdef lnn_pool_rec_t *_trace_buf = NULL
cdef long _trace_cap = 0

#: one job: post (ns, CLOCK_MONOTONIC), worker 1's first claim (ns after the post, -1: it ran
#: no task), the job's time (post to the caller past the last barrier), the caller's CPU at
#: the post, worker 1's at its first claim (-1)
TRACE_DTYPE = [("post_ns", "<i8"), ("claim_ns", "<i8"), ("job_ns", "<i8"),
               ("caller_cpu", "<i4"), ("worker_cpu", "<i4")]


def start_trace(long jobs):
    """Record each of the next ``jobs`` jobs of the pool (see :func:`stop_trace`). Call it
    while no job runs (from the thread that runs them)."""
    global _trace_buf, _trace_cap
    if jobs <= 0:
        raise ValueError(f"jobs must be > 0, got {jobs!r}")
    stop_trace()
    _trace_buf = <lnn_pool_rec_t *>malloc(jobs * sizeof(lnn_pool_rec_t))
    if _trace_buf == NULL:
        raise MemoryError()
    _trace_cap = jobs
    lnn_pool_set_trace(_trace_buf, jobs)


def stop_trace():
    """Stop recording; the jobs recorded since :func:`start_trace`, as a structured array of
    :data:`TRACE_DTYPE` (empty if none)."""
    global _trace_buf, _trace_cap
    import numpy as np

    cdef long n = lnn_pool_set_trace(NULL, 0)
    out = np.zeros(n, dtype=TRACE_DTYPE)
    if n:
        memcpy(cnp.PyArray_DATA(out), _trace_buf, n * sizeof(lnn_pool_rec_t))
    free(_trace_buf)
    _trace_buf = NULL
    _trace_cap = 0
    return out


# -- a job of trivial tasks, for the tests -------------------------------------------------

cdef struct _test_ctx:
    int64_t *out
    Py_ssize_t fail
    long spin


cdef int _test_task(void *ctx, Py_ssize_t i) noexcept nogil:
    cdef _test_ctx *c = <_test_ctx *>ctx
    cdef timespec t0, t1
    clock_gettime(CLOCK_MONOTONIC, &t0)
    while c.spin > 0:  # busy for c.spin ns, so that several threads get tasks
        clock_gettime(CLOCK_MONOTONIC, &t1)
        if (t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec) >= c.spin:
            break
    c.out[i] = i * i + 1
    return 7 if i == c.fail else 0


def run_test(cnp.ndarray out not None, int threads, Py_ssize_t fail=-1, long spin=0):
    """out[i] = i * i + 1 for every i, as a pool job of len(out) tasks on ``threads``
    threads (out int64, C-contiguous); task ``fail`` returns error code 7; each task busy for ``spin`` ns. Returns the job's
    code (0, or 7)."""
    if cnp.PyArray_TYPE(out) != cnp.NPY_INT64 or not cnp.PyArray_IS_C_CONTIGUOUS(out):
        raise TypeError("run_test takes a C-contiguous int64 array")
    cdef _test_ctx c
    c.out = <int64_t *>cnp.PyArray_DATA(out)
    c.fail = fail
    c.spin = spin
    cdef Py_ssize_t n = cnp.PyArray_SIZE(out)
    cdef int rc
    with nogil:
        rc = lnn_pool_run(_test_task, &c, n, threads)
    return rc


# -- a job of several phases, for the tests -------------------------------------------------

cdef struct _phase_ctx:
    int64_t *out        # this phase's outputs
    const int64_t *prev  # the previous phase's (NULL for the first)
    Py_ssize_t n_prev
    Py_ssize_t fail
    long spin
    int nested          # threads of a job run from inside each task (0: none)
    int64_t acc         # the nested job's sum


cdef int _phase_task(void *ctx, Py_ssize_t i) noexcept nogil:
    """out[i] = i + 1 + the sum of the whole previous phase (wrong if any of it is missing);
    with ``nested``, the sum is taken by a job started from inside the task."""
    cdef _phase_ctx *c = <_phase_ctx *>ctx
    cdef _phase_ctx inner
    cdef int64_t total = 0
    cdef Py_ssize_t k
    cdef timespec t0, t1
    cdef int rc = 0
    clock_gettime(CLOCK_MONOTONIC, &t0)
    while c.spin > 0:  # busy for c.spin ns, so that several threads get tasks
        clock_gettime(CLOCK_MONOTONIC, &t1)
        if (t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec) >= c.spin:
            break
    if c.nested and c.prev != NULL:  # a job inside a task: the pool is busy, it runs here
        inner.prev = c.prev
        inner.acc = 0
        rc = lnn_pool_run(_sum_task, &inner, c.n_prev, c.nested)
        total = inner.acc
    else:
        for k in range(c.n_prev):
            total += c.prev[k]
    c.out[i] = i + 1 + total
    if rc:
        return rc
    return 9 if i == c.fail else 0


cdef extern from *:
    """
    static inline void lnn_test_add(int64_t *p, int64_t v) { __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
    """
    void lnn_test_add(int64_t *p, int64_t v) nogil


cdef int _sum_task(void *ctx, Py_ssize_t i) noexcept nogil:
    cdef _phase_ctx *c = <_phase_ctx *>ctx
    # NumPy: acc += prev[i]. Atomically: inside a task of a threaded outer job the nested
    # job runs alone (the pool is busy), but inside a 1-thread outer job (run alone, the pool
    # left free) it runs on the pool's threads, and a plain += there lost updates
    lnn_test_add(&c.acc, c.prev[i])
    return 0


def run_test_phases(list outs not None, int threads, Py_ssize_t fail_phase=-1,
                    Py_ssize_t fail=-1, long spin=0, int nested=0):
    """One job of len(outs) phases on ``threads`` threads: task i of phase p sets
    outs[p][i] = i + 1 + outs[p - 1].sum() (outs int64, C-contiguous, any lengths, 0 too).
    Task ``fail`` of phase ``fail_phase`` returns error code 9; each task is busy ``spin`` ns;
    ``nested`` > 0: each task takes the sum in a job of that many threads started from inside
    it. Returns the job's code (0, or 9)."""
    cdef Py_ssize_t count = len(outs), p
    cdef cnp.ndarray a
    if not 0 < count <= 64:
        raise ValueError("run_test_phases takes 1 to 64 phases")
    cdef _phase_ctx ctxs[64]
    cdef lnn_phase_t phases[64]
    for p in range(count):
        a = outs[p]
        if cnp.PyArray_TYPE(a) != cnp.NPY_INT64 or not cnp.PyArray_IS_C_CONTIGUOUS(a):
            raise TypeError("run_test_phases takes C-contiguous int64 arrays")
        ctxs[p].out = <int64_t *>cnp.PyArray_DATA(a)
        ctxs[p].prev = ctxs[p - 1].out if p > 0 else NULL
        ctxs[p].n_prev = phases[p - 1].tasks if p > 0 else 0
        ctxs[p].fail = fail if p == fail_phase else -1
        ctxs[p].spin = spin
        ctxs[p].nested = nested
        phases[p].fn = _phase_task
        phases[p].ctx = &ctxs[p]
        phases[p].tasks = cnp.PyArray_SIZE(a)
    cdef int rc
    with nogil:
        rc = lnn_pool_run_phases(phases, <int>count, threads)
    return rc


def _spin_setting():
    import os

    env = os.environ.get("LEPTON_POOL_SPIN_US", "").strip()
    try:
        return float(env) if env else DEFAULT_SPIN_US
    except ValueError:
        return DEFAULT_SPIN_US


set_spin_us(_spin_setting())
set_wait_us(DEFAULT_WAIT_US)
set_apart(_apart_setting())
