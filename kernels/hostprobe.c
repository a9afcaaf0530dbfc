/* lepton_nn.kernels._hostprobe: the host's state as a benchmark report states it
 * (lepton_nn.bench.hoststate; issue 23's "targets are ratios in one run").
 *
 * On a virtual machine the host may slow one vCPU for seconds to minutes (1.3-2x on
 * everything) and the line round trip between two vCPUs may swing (~150 against ~900 ns on
 * the Firecracker guest issue 23 measured), and every 2-thread figure inherits both. Two
 * probes, plain C on purpose (no Cython, no NumPy: ~15 KB; the runtime never loads it):
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
 * Both release the GIL. The source of benchmarks/vcpu_probe.c's round trip, portable. */
#define PY_SSIZE_T_CLEAN
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif
#include <Python.h>
#include <stdint.h>

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
static atomic_flag busy = ATOMIC_FLAG_INIT; /* one pingpong at a time: pp is shared */

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
    if (atomic_flag_test_and_set(&busy)) {
        PyMem_RawFree(rt);
        PyErr_SetString(PyExc_RuntimeError, "pingpong: another call is running");
        return NULL;
    }
    int err;
    Py_BEGIN_ALLOW_THREADS;
    err = run_pingpong(a, b, trips, timeout_s, rt);
    Py_END_ALLOW_THREADS;
    atomic_flag_clear(&busy);
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
#else
static PyObject *pingpong(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    PyErr_SetString(PyExc_OSError, "the cross-CPU round trip is measured on Linux only");
    return NULL;
}
#endif

static PyMethodDef methods[] = {
    {"spin", spin, METH_VARARGS, "spin(iters, reps) -> ns of each rep of the fixed L1 loop"},
    {"pingpong", pingpong, METH_VARARGS,
     "pingpong(cpu_a, cpu_b, trips, timeout_s) -> ns of each cache-line round trip"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_hostprobe",
                                    "The host's state: vCPU speed and cross-CPU round trip.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__hostprobe(void) { return PyModule_Create(&module); }
