/* lepton_nn.kernels._hostprobe: the host's state as a benchmark report states it
 * (lepton_nn.bench.hoststate; issue 23's "targets are ratios in one run").
 *
 * On a virtual machine the host may slow one vCPU for seconds to minutes (1.3-2x on
 * everything) and the line round trip between two vCPUs may swing (~150 against ~900 ns on
 * the Firecracker guest issue 23 measured), and every 2-thread figure inherits both; and two
 * vCPUs busy at once may slow each other. The probes, plain C on purpose (no Cython, no
 * NumPy: ~19 KB; the runtime never loads it):
 *
 *   spin(iters, reps) -> list of ns: ``reps`` times a fixed L1-resident loop of ``iters``
 *       iterations on the calling thread (the caller pins it, os.sched_setaffinity): eight
 *       independent multiply-add chains through a 2 KiB table, so both the multiplier's
 *       throughput and the load-use latency count, as in a kernel's inner loop.
 *   pingpong(cpu_a, cpu_b, trips, timeout_s) -> list of ns: ``trips`` round trips of one
 *       cache line between this thread pinned to cpu_a and a helper thread pinned to cpu_b
 *       (two line transfers each), after 200 untimed ones; the caller's affinity is put
 *       back. Linux only (OSError elsewhere); OSError if a CPU cannot be used or the helper
 *       does not answer within ``timeout_s`` (a CPU taken away, a frozen vCPU).
 *
 *   corun(cpu_a, cpu_b, iters, reps, stream_reps, nbytes, timeout_s) -> two tuples (the L1
 *       loop of ``iters`` steps, then a read of a buffer of ``nbytes``, summed as 64-bit
 *       words: a memory-streaming loop) of four lists of ns (alone on cpu_a, alone on
 *       cpu_b, together on cpu_a, together on cpu_b): this thread pinned to cpu_a and a
 *       helper thread to cpu_b run ``reps`` repetitions (``stream_reps`` of the read; 0:
 *       none) one after the other while the other waits, then at once, back to back until
 *       both ran theirs. Of the together runs, only repetitions the other thread was looping
 *       all through (so those lists may be short, or empty on a loaded guest). Alone and
 *       together within a millisecond or so of each other: the host's speed, which drifts
 *       by 1.3x within seconds here, is the same for both. Two vCPUs that share a core (SMT
 *       siblings on the host), its clock or a memory path slow each other together and not
 *       alone. Linux only, OSError as pingpong's.
 *
 * All release the GIL. The source of benchmarks/vcpu_probe.c's round trip, portable. */
#define PY_SSIZE_T_CLEAN
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(_WIN32)
#include <windows.h>
static double now_ns(void) {
    LARGE_INTEGER f, t;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&t);
    return (double)t.QuadPart * 1e9 / (double)f.QuadPart;
}
#else
#include <time.h>
static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}
#endif

static volatile uint64_t sink;
/* one probe with threads or buffers at a time (pp, cr and bufs are shared): set and cleared
 * with the GIL held, so a plain int will do */
static int busy;

/* eight chains x = x * K + tab[x >> 56 & 255]: a multiply, an add and a dependent L1 load
 * a step each; ~9 cycles a step on Zen 3 with 8 multiplies in flight */
static void spin_loop(long iters) {
    static uint64_t tab[256];
    if (!tab[1])
        for (int i = 0; i < 256; i++) tab[i] = (uint64_t)i * 0x9E3779B97F4A7C15ull + 1;
    const uint64_t k = 6364136223846793005ull;
    uint64_t a = 1, b = 2, c = 3, d = 4, e = 5, f = 6, g = 7, h = 8;
    for (long i = 0; i < iters; i++) {
        a = a * k + tab[a >> 56];
        b = b * k + tab[b >> 56];
        c = c * k + tab[c >> 56];
        d = d * k + tab[d >> 56];
        e = e * k + tab[e >> 56];
        f = f * k + tab[f >> 56];
        g = g * k + tab[g >> 56];
        h = h * k + tab[h >> 56];
    }
    sink = a ^ b ^ c ^ d ^ e ^ f ^ g ^ h;
}

static PyObject *to_list(const double *v, Py_ssize_t n) {
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *x = PyFloat_FromDouble(v[i]);
        if (!x) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, x);
    }
    return out;
}

static PyObject *spin(PyObject *self, PyObject *args) {
    (void)self;
    long iters, reps;
    if (!PyArg_ParseTuple(args, "ll", &iters, &reps)) return NULL;
    if (iters < 1 || reps < 1 || reps > 1000000) {
        PyErr_SetString(PyExc_ValueError, "spin: iters >= 1 and 1 <= reps <= 1e6");
        return NULL;
    }
    double *t = PyMem_RawMalloc((size_t)reps * sizeof *t);
    if (!t) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS;
    spin_loop(iters); /* the table and the loop's code into L1 */
    for (long r = 0; r < reps; r++) {
        const double t0 = now_ns();
        spin_loop(iters);
        t[r] = now_ns() - t0;
    }
    Py_END_ALLOW_THREADS;
    PyObject *out = to_list(t, reps);
    PyMem_RawFree(t);
    return out;
}

/* the streaming buffers, one a thread (corun's helper reads the second), kept for the
 * process's life: allocated and written once, so a reading pays no page faults */
static uint64_t *bufs[2];
static size_t buf_words;

static int ensure_bufs(size_t nbytes) {
    const size_t words = nbytes / sizeof(uint64_t);
    if (words == buf_words && bufs[0]) return 0;
    for (int i = 0; i < 2; i++) {
        free(bufs[i]);
        bufs[i] = malloc(words * sizeof(uint64_t));
    }
    buf_words = bufs[0] && bufs[1] ? words : 0;
    if (!buf_words) return -1;
    for (int i = 0; i < 2; i++)
        for (size_t j = 0; j < words; j++) bufs[i][j] = j * 0x9E3779B97F4A7C15ull + (uint64_t)i;
    return 0;
}

/* sink = buf.sum() as four 64-bit sums: the loads, not the adds, set the pace */
static void stream_loop(const uint64_t *buf, size_t words) {
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t i = 0; i + 4 <= words; i += 4) {
        a += buf[i];
        b += buf[i + 1];
        c += buf[i + 2];
        d += buf[i + 3];
    }
    sink = a ^ b ^ c ^ d;
}

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

/* ping and pong on lines of their own: the helper waits for a new ping and copies it to pong */
static struct {
    _Alignas(128) atomic_long ping;
    _Alignas(128) atomic_long pong;
    _Alignas(128) atomic_int state; /* 0 starting, 1 ready, 2 stop, -1 could not pin */
    int cpu;
    double deadline;
} pp;

static int pin(int cpu) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    return sched_setaffinity(0, sizeof s, &s); /* 0: the calling thread */
}

static void *echo(void *u) {
    (void)u;
    if (pin(pp.cpu) != 0) {
        atomic_store(&pp.state, -1);
        return NULL;
    }
    atomic_store(&pp.state, 1);
    long last = 0;
    for (unsigned n = 0;; n++) {
        const long v = atomic_load_explicit(&pp.ping, memory_order_acquire);
        if (v != last) {
            last = v;
            atomic_store_explicit(&pp.pong, v, memory_order_release);
        } else if ((n & 4095) == 0) {
            if (atomic_load(&pp.state) == 2 || now_ns() > pp.deadline) return NULL;
        }
    }
}

/* 0 ok, else the step that failed: 1 pin self, 2 thread, 3 helper could not pin, 4 timeout */
static int run_pingpong(int a, int b, long trips, double timeout_s, double *rt) {
    cpu_set_t old;
    if (sched_getaffinity(0, sizeof old, &old) != 0 || pin(a) != 0) return 1;
    atomic_store(&pp.ping, 0);
    atomic_store(&pp.pong, 0);
    atomic_store(&pp.state, 0);
    pp.cpu = b;
    pp.deadline = now_ns() + timeout_s * 1e9;
    pthread_t th;
    int err = 0;
    if (pthread_create(&th, NULL, echo, NULL) != 0) {
        sched_setaffinity(0, sizeof old, &old);
        return 2;
    }
    while (atomic_load(&pp.state) == 0 && now_ns() < pp.deadline) {}
    if (atomic_load(&pp.state) != 1) err = atomic_load(&pp.state) == -1 ? 3 : 4;
    long v = 0;
    for (long i = -200; i < trips && !err; i++) {
        const double t0 = now_ns();
        atomic_store_explicit(&pp.ping, ++v, memory_order_release);
        for (unsigned n = 1; atomic_load_explicit(&pp.pong, memory_order_acquire) != v; n++)
            if ((n & 4095) == 0 && now_ns() > pp.deadline) {
                err = 4;
                break;
            }
        if (i >= 0) rt[i] = now_ns() - t0;
    }
    atomic_store(&pp.state, 2);
    pthread_join(th, NULL);
    sched_setaffinity(0, sizeof old, &old);
    return err;
}

static PyObject *pingpong(PyObject *self, PyObject *args) {
    (void)self;
    int a, b;
    long trips;
    double timeout_s;
    if (!PyArg_ParseTuple(args, "iild", &a, &b, &trips, &timeout_s)) return NULL;
    if (a < 0 || b < 0 || a >= CPU_SETSIZE || b >= CPU_SETSIZE || a == b || trips < 1 ||
        trips > 1000000 || !(timeout_s > 0)) {
        PyErr_SetString(PyExc_ValueError, "pingpong: two different CPUs, 1 <= trips <= 1e6, timeout > 0");
        return NULL;
    }
    double *rt = PyMem_RawMalloc((size_t)trips * sizeof *rt);
    if (!rt) return PyErr_NoMemory();
    if (busy) {
        PyMem_RawFree(rt);
        PyErr_SetString(PyExc_RuntimeError, "pingpong: another call is running");
        return NULL;
    }
    busy = 1;
    int err;
    Py_BEGIN_ALLOW_THREADS;
    err = run_pingpong(a, b, trips, timeout_s, rt);
    Py_END_ALLOW_THREADS;
    busy = 0;
    if (err) {
        static const char *why[] = {"", "cannot pin this thread to CPU %d",
                                    "cannot start a thread (CPU %d)", "cannot pin a thread to CPU %d",
                                    "no answer from CPU %d within the timeout"};
        PyMem_RawFree(rt);
        return PyErr_Format(PyExc_OSError, why[err], err == 1 ? a : b);
    }
    PyObject *out = to_list(rt, trips);
    PyMem_RawFree(rt);
    return out;
}
/* corun: both threads start once both have arrived (a counter each arrival bumps; one
 * barrier, so a loaded guest costs one wait for the helper's time slice, not one a
 * repetition). Then each phase (0 the L1 loop, 1 the read) both at once, back to back, each
 * repetition stamped at its start and end, until both have run ``reps`` (or CR_CAP times
 * that: the partner never came); then each phase alone, thread 0 while thread 1 waits (the
 * ``step`` counter orders them), then thread 1. */
#define CR_CAP 4
typedef struct {
    _Alignas(128) atomic_int done[2];
    long reps, cap, n[2];
    double *solo[2]; /* per thread: reps durations alone */
    double *t[2];    /* per thread: cap starts, then cap ends */
} cr_phase;
static struct {
    _Alignas(128) atomic_long arrived;
    _Alignas(128) atomic_long step; /* 0: thread 0 alone, 1: thread 1 alone, 2: done */
    _Alignas(128) atomic_int state; /* 1 running, -1 could not pin, 4 timeout */
    cr_phase ph[2];
    int cpu;
    long iters;
    double deadline, timeout_ns;
} cr;

static inline void relax(void) { /* a waiting thread leaves an SMT sibling its issue slots */
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    __builtin_ia32_pause();
#endif
}

/* wait until *v >= target: 0, or 4 past ``deadline`` or when the other thread gave up */
static int cr_wait(atomic_long *v, long target, double deadline) {
    for (unsigned n = 1; atomic_load_explicit(v, memory_order_acquire) < target; n++) {
        relax();
        if ((n & 4095) == 0 && (atomic_load(&cr.state) != 1 || now_ns() > deadline)) {
            int running = 1; /* keep -1 (the helper could not pin) if it is there */
            atomic_compare_exchange_strong(&cr.state, &running, 4);
            return 4;
        }
    }
    return 0;
}

static void cr_rep(int p, int who) {
    if (p == 0)
        spin_loop(cr.iters);
    else
        stream_loop(bufs[who], buf_words);
}

/* the phase's repetitions at once: back to back until both threads ran ``reps`` */
static void cr_together_run(int p, int who) {
    cr_phase *ph = &cr.ph[p];
    double *t = ph->t[who];
    long r = -1; /* r = -1: untimed, the loop and its data into the caches */
    for (; r < ph->cap; r++) {
        const double t0 = now_ns();
        cr_rep(p, who);
        if (r < 0) continue;
        t[r] = t0, t[ph->cap + r] = now_ns();
        if (r + 1 == ph->reps) atomic_store(&ph->done[who], 1);
        if (r + 1 >= ph->reps && atomic_load(&ph->done[!who])) {
            r++;
            break;
        }
    }
    ph->n[who] = r < 0 ? 0 : r;
}

static void cr_run(int who) {
    atomic_fetch_add(&cr.arrived, 1);
    if (cr_wait(&cr.arrived, 2, cr.deadline)) return;
    /* together first, right after the barrier (both threads are on their CPUs then; a wait
     * later is a chance for a loaded guest to preempt one); both leave the loop's phase
     * within a repetition of each other, so the read's needs no barrier */
    for (int p = 0; p < 2; p++)
        if (cr.ph[p].reps) cr_together_run(p, who);
    /* then alone: thread 0 while thread 1 waits (as long as the barrier could), then 1 */
    if (cr_wait(&cr.step, who, now_ns() + cr.timeout_ns)) return;
    for (int p = 0; p < 2; p++) {
        cr_phase *ph = &cr.ph[p];
        if (!ph->reps) continue;
        cr_rep(p, who); /* untimed */
        for (long r = 0; r < ph->reps; r++) {
            const double t0 = now_ns();
            cr_rep(p, who);
            ph->solo[who][r] = now_ns() - t0;
        }
    }
    atomic_store(&cr.step, who + 1);
}

/* Put into ``out`` the durations of thread w's repetitions together that ran while the other
 * thread was looping without a stop: inside its first start .. last end, and every stretch of
 * the other's (a repetition's start to the next one's) that overlaps it shorter than 3 times
 * the other's fastest repetition (the co-run slows a loop by 2x at most; a time slice lost to
 * another process or the host is ~1000x a repetition). Returns how many. */
static Py_ssize_t cr_together(const cr_phase *ph, int w, double *out) {
    const double *os = ph->t[!w], *oe = os + ph->cap, *s = ph->t[w], *e = s + ph->cap;
    const long on = ph->n[!w];
    if (on == 0) return 0;
    double fast = oe[0] - os[0];
    for (long k = 1; k < on; k++) fast = oe[k] - os[k] < fast ? oe[k] - os[k] : fast;
    Py_ssize_t kept = 0;
    for (long r = 0; r < ph->n[w]; r++) {
        int ok = os[0] <= s[r] && oe[on - 1] >= e[r];
        for (long k = 0; k < on && ok; k++) {
            const double end = k + 1 < on ? os[k + 1] : oe[k];
            if (os[k] < e[r] && end > s[r] && end - os[k] > 3 * fast) ok = 0;
        }
        if (ok) out[kept++] = e[r] - s[r];
    }
    return kept;
}

static void *cr_helper(void *u) {
    (void)u;
    if (pin(cr.cpu) != 0) {
        atomic_store(&cr.state, -1);
        return NULL;
    }
    cr_run(1);
    return NULL;
}

/* 0 ok, else as run_pingpong's (5: no memory for the buffers) */
static int run_corun(int a, size_t nbytes, double timeout_s) {
    cpu_set_t old;
    if (sched_getaffinity(0, sizeof old, &old) != 0 || pin(a) != 0) return 1;
    if (cr.ph[1].reps && ensure_bufs(nbytes) != 0) {
        sched_setaffinity(0, sizeof old, &old);
        return 5;
    }
    atomic_store(&cr.arrived, 0);
    atomic_store(&cr.step, 0);
    atomic_store(&cr.state, 1);
    for (int p = 0; p < 2; p++) {
        atomic_store(&cr.ph[p].done[0], 0);
        atomic_store(&cr.ph[p].done[1], 0);
        cr.ph[p].n[0] = cr.ph[p].n[1] = 0;
    }
    cr.timeout_ns = timeout_s * 1e9;
    cr.deadline = now_ns() + cr.timeout_ns;
    pthread_t th;
    if (pthread_create(&th, NULL, cr_helper, NULL) != 0) {
        sched_setaffinity(0, sizeof old, &old);
        return 2;
    }
    cr_run(0);
    pthread_join(th, NULL);
    sched_setaffinity(0, sizeof old, &old);
    const int st = atomic_load(&cr.state);
    return st == -1 ? 3 : st == 4 ? 4 : 0;
}

/* the two lists of a phase's kept repetitions, as a tuple */
/* a phase's four lists: alone on cpu_a, alone on cpu_b, together on each (the kept) */
static PyObject *cr_lists(const cr_phase *ph, double *kept) {
    const Py_ssize_t na = cr_together(ph, 0, kept), nb = cr_together(ph, 1, kept + ph->cap);
    const long ns = ph->n[0] || ph->n[1] ? ph->reps : 0; /* a skipped phase: all empty */
    PyObject *l[4] = {to_list(ph->solo[0], ns), to_list(ph->solo[1], ns), to_list(kept, na),
                      to_list(kept + ph->cap, nb)};
    PyObject *out = l[0] && l[1] && l[2] && l[3] ? PyTuple_Pack(4, l[0], l[1], l[2], l[3]) : NULL;
    for (int i = 0; i < 4; i++) Py_XDECREF(l[i]);
    return out;
}

static PyObject *corun(PyObject *self, PyObject *args) {
    (void)self;
    int a, b;
    long iters, reps, sreps;
    Py_ssize_t nbytes;
    double timeout_s;
    if (!PyArg_ParseTuple(args, "iilllnd", &a, &b, &iters, &reps, &sreps, &nbytes, &timeout_s))
        return NULL;
    if (a < 0 || b < 0 || a >= CPU_SETSIZE || b >= CPU_SETSIZE || a == b || iters < 1 ||
        reps < 1 || reps > 100000 || sreps < 0 || sreps > 100000 || !(timeout_s > 0) ||
        (sreps && (nbytes < 4096 || nbytes > ((Py_ssize_t)1 << 30)))) {
        PyErr_SetString(PyExc_ValueError,
                        "corun: two different CPUs, iters >= 1, 1 <= reps <= 1e5, 0 <= "
                        "stream_reps <= 1e5, 4 KiB <= nbytes <= 1 GiB, timeout > 0");
        return NULL;
    }
    const long cap0 = CR_CAP * reps, cap1 = CR_CAP * sreps;
    /* stamps of both threads of both phases, the durations alone, the kept ones together */
    const size_t size = 4 * (size_t)(cap0 + cap1) + 2 * (size_t)(reps + sreps) +
                        2 * (size_t)(cap0 > cap1 ? cap0 : cap1);
    double *t = PyMem_RawMalloc(size * sizeof *t);
    if (!t) return PyErr_NoMemory();
    if (busy) {
        PyMem_RawFree(t);
        PyErr_SetString(PyExc_RuntimeError, "corun: another probe is running");
        return NULL;
    }
    busy = 1;
    cr.cpu = b, cr.iters = iters;
    cr.ph[0].reps = reps, cr.ph[0].cap = cap0;
    cr.ph[1].reps = sreps, cr.ph[1].cap = cap1;
    cr.ph[0].t[0] = t, cr.ph[0].t[1] = t + 2 * cap0;
    cr.ph[1].t[0] = t + 4 * cap0, cr.ph[1].t[1] = t + 4 * cap0 + 2 * cap1;
    double *solo = t + 4 * (cap0 + cap1);
    cr.ph[0].solo[0] = solo, cr.ph[0].solo[1] = solo + reps;
    cr.ph[1].solo[0] = solo + 2 * reps, cr.ph[1].solo[1] = solo + 2 * reps + sreps;
    int err;
    Py_BEGIN_ALLOW_THREADS;
    err = run_corun(a, (size_t)nbytes, timeout_s);
    Py_END_ALLOW_THREADS;
    busy = 0;
    PyObject *out = NULL;
    if (err == 5)
        PyErr_NoMemory();
    else if (err) {
        static const char *why[] = {"", "cannot pin this thread to CPU %d",
                                    "cannot start a thread (CPU %d)", "cannot pin a thread to CPU %d",
                                    "no answer from CPU %d within the timeout"};
        PyErr_Format(PyExc_OSError, why[err], err == 1 ? a : b);
    } else {
        double *kept = solo + 2 * (reps + sreps);
        PyObject *l0 = cr_lists(&cr.ph[0], kept), *l1 = l0 ? cr_lists(&cr.ph[1], kept) : NULL;
        out = l0 && l1 ? PyTuple_Pack(2, l0, l1) : NULL;
        Py_XDECREF(l0);
        Py_XDECREF(l1);
    }
    PyMem_RawFree(t);
    return out;
}
#else
static PyObject *pingpong(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    PyErr_SetString(PyExc_OSError, "the cross-CPU round trip is measured on Linux only");
    return NULL;
}

static PyObject *corun(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    PyErr_SetString(PyExc_OSError, "the co-run probe is measured on Linux only");
    return NULL;
}
#endif

static PyMethodDef methods[] = {
    {"spin", spin, METH_VARARGS, "spin(iters, reps) -> ns of each rep of the fixed L1 loop"},
    {"pingpong", pingpong, METH_VARARGS,
     "pingpong(cpu_a, cpu_b, trips, timeout_s) -> ns of each cache-line round trip"},
    {"corun", corun, METH_VARARGS,
     "corun(cpu_a, cpu_b, iters, reps, stream_reps, nbytes, timeout_s) -> ((ns on cpu_a, ns on "
     "cpu_b) of the L1 loop, (same) of the read): both CPUs at once"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_hostprobe",
                                    "The host's state: vCPU speed, cross-CPU round trip, co-run speed.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__hostprobe(void) { return PyModule_Create(&module); }
