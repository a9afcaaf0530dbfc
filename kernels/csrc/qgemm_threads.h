/* qgemm_threads.h -- qg_run: the int8 GEMM of qgemm.h cut into (row block, column chunk)
 * tasks on the shared pool (pool.h). Included once by qgemm.h after its ISA paths and dispatch. */

/* Threads: a call is cut into tasks (row block, column chunk), row block major: row blocks
 * of at most QG_TASK_ROWS rows (a multiple of 6, the AVX2 tile's height, but the last), column
 * chunks of an even number of 16-column blocks (AMX tiles take 2), about QG_TASKS_PER_THREAD
 * tasks a thread, and more at large M, so that no task is much above QG_TASK_MACS
 * multiply-adds (the call's end waits for the last task a thread claimed: W6 at M = 1024 had
 * 33 tasks of up to 35M multiply-adds, ~0.45 ms each, ~6 % of a thread's share). The shared pool (pool.h) gives thread t the t-th run of tasks first (its
 * columns of its row blocks: the same part of W call after call), then what is left of the
 * others'; tasks are short, so a thread that starts late or runs slow (a vCPU waking up) holds
 * the call up by one short task at most, and the others take its share. On AVX2 a thread
 * widens a row block once, into its own slot of the call's scratch (qg_pack_avx2), and runs
 * every column chunk of that block it claims from there; other paths run each task on its
 * rows directly. Rows and columns are independent and every output comes from the same code:
 * the same bits at any thread count. */
#include "pool.h"

/* Below this many multiply-adds (M K N) a call runs on its caller alone. 2^21 is ~40 us of
   one core's work at M >= 6 (~50 multiply-adds per ns), where a job on the pool's spinning
   worker costs ~1-2 us; it was 2^25 (~0.6 ms) from when a call started a thread of its own,
   which kept every layer of the W5 MLP at batch 64 (784-512-256-10: 25.7M multiply-adds at
   most) on one thread while the runtime, told the call was split, woke the pool's worker
   for nothing. M = 1, K = N = 1024 (the GEMV, ~12 us) stays below it. runtime/steps.py's
   QLINEAR_SPLIT_MIN mirrors it (tests/test_qgemm_blocking.py checks the two agree). */
#define QG_MIN_PARALLEL_MACS (1LL << 21)

/* The threads qg_run splits an (M, K) x (K, N) call over when given `nthreads`: at most one
 * per two 16-column blocks (the chunks are even), 1 below QG_MIN_PARALLEL_MACS. */
static int qg_threads(int64_t M, int64_t K, int64_t N, int nthreads) {
    const int64_t NB = (N + 15) >> 4;
    const int threads = (int)(nthreads < (NB + 1) / 2 ? nthreads : (NB + 1) / 2);
    const double macs = (double)M * (double)K * (double)N;
    return threads < 2 || macs < (double)QG_MIN_PARALLEL_MACS ? 1 : threads;
}
#define QG_TASK_ROWS 96       /* rows per task, at most (qgemm_avx2.h's QG_MC2) */
#define QG_TASKS_PER_THREAD 16 /* W6 at M = 64, 2 threads: 32 tasks of ~30 us */
#define QG_TASK_MACS (1LL << 23) /* ~0.1 ms at 75 multiply-adds per ns: W6 at M >= 512 */

#if LA_X86 && defined(__GNUC__)
#define QG_SLOTS 1 /* per-thread widened rows (needs _Thread_local and __atomic builtins) */
#else
#define QG_SLOTS 0
#endif

typedef struct {
    qg_fn f;
    const qg_args *p;
    int64_t nb, width, chunks, rows; /* blocks; blocks per chunk, chunks per row block, rows
                                        per row block */
    int threads;
    uint64_t id;          /* this call's number: a thread's slot is valid for it alone */
    unsigned char *slots; /* AVX2: `threads` slots of slot_bytes, or NULL */
    int64_t slot_bytes, aw_bytes;
    int taken; /* slots handed out */
} qg_job;

#if QG_SLOTS
static uint64_t qg_job_seq; /* calls so far (atomic) */
/* this thread's slot in call `id`, and the row block its slot holds widened (-1: none) */
static _Thread_local struct {
    uint64_t id;
    int slot;
    int64_t block;
} qg_mine;
#endif

/* task t: rows [m0, m1) of row block t / chunks, column blocks [lo, hi) of chunk t % chunks */
static int qg_task(void *ctx, ptrdiff_t t) {
    const qg_job *j = (const qg_job *)ctx;
    const qg_args *p = j->p;
    const int64_t rb = t / j->chunks, c = t % j->chunks;
    const int64_t m0 = rb * j->rows, m1 = m0 + j->rows < p->M ? m0 + j->rows : p->M;
    const int64_t lo = c * j->width, hi = lo + j->width < j->nb ? lo + j->width : j->nb;
    if (hi <= lo || m1 <= m0) return 0;
#if QG_SLOTS
    if (j->slots) {
        if (qg_mine.id != j->id) { /* this thread's first task of the call: take a slot */
            qg_mine.id = j->id;
            qg_mine.slot = __atomic_fetch_add(&((qg_job *)j)->taken, 1, __ATOMIC_RELAXED);
            qg_mine.block = -1;
        }
        if (qg_mine.slot < j->threads) {
            unsigned char *slot = j->slots + qg_mine.slot * j->slot_bytes;
            int16_t *aw = (int16_t *)slot;
            if (qg_mine.block != rb) { /* NumPy: aw = widened(a[m0 : m1]) */
                qg_pack_avx2(p, m0, m1, aw);
                qg_mine.block = rb;
            }
            /* NumPy: out[m0 : m1, 16 lo : 16 hi] = the product on those rows and columns */
            qg_block_avx2(p, m0, m1, aw, (__m256i *)(slot + j->aw_bytes), lo, hi);
            return 0;
        }
    }
#endif
    /* NumPy: out[m0 : m1] = the same product on a[m0 : m1], columns [16 lo, 16 hi) */
    qg_args s = *p;
    s.M = m1 - m0;
    s.a = p->a + m0 * p->K;
    s.xs = p->xs + m0 * p->xs_step;
    s.zp = p->zp + m0 * p->zp_step;
    if (p->outf) s.outf = p->outf + m0 * p->N;
    if (p->outi) s.outi = p->outi + m0 * p->N;
    return j->f(&s, lo, hi);
}

/* The task grid of an (M, K) x (K, 16 NB) call on `threads` threads: rows per row block,
 * 16-column blocks per chunk, chunks per row block; returns the number of tasks.
 * NumPy: blocks = ceil(M / 96); rows = ceil(ceil(M / blocks) / 6) * 6;
 * want = max(16 threads, ceil(M K 16 NB / QG_TASK_MACS)); chunks = ceil(want / blocks);
 * width = even ceil(NB / chunks); chunks = ceil(NB / width); tasks = ceil(M / rows) chunks */
static int64_t qg_plan(int64_t M, int64_t K, int64_t NB, int threads, int64_t *rows,
                       int64_t *width, int64_t *chunks) {
    const int64_t blocks = (M + QG_TASK_ROWS - 1) / QG_TASK_ROWS;
    *rows = ((M + blocks - 1) / blocks + 5) / 6 * 6;
    const double macs = (double)M * (double)(K > 0 ? K : 1) * (double)(16 * NB);
    const double by_size = macs / (double)QG_TASK_MACS;
    int64_t want = QG_TASKS_PER_THREAD * (int64_t)threads;
    if (by_size > (double)want) want = by_size > (double)(blocks * NB) ? blocks * NB : (int64_t)by_size + 1;
    const int64_t c = (want + blocks - 1) / blocks;
    *width = (NB + c - 1) / c;
    *width += *width & 1;
    *chunks = (NB + *width - 1) / *width;
    return (M + *rows - 1) / *rows * *chunks;
}

/* Run the active path over all output columns, on up to `nthreads` threads. 0, or -1 when a
 * path's scratch could not be allocated (the output is then not all written). */
static int qg_run(const qg_args *p, int nthreads) {
    const int64_t NB = (p->N + 15) >> 4;
    if (p->M == 0 || NB == 0) return 0;
    qg_fn f = p->K == 0 ? qg_run_portable : qg_impl[qg_active];
    const int threads = qg_threads(p->M, p->K, p->N, nthreads);
    if (threads < 2) return f(p, 0, NB);
    qg_job j = {f, p, NB, 0, 0, 0, threads, 0, NULL, 0, 0, 0};
    const int64_t tasks = qg_plan(p->M, p->K, NB, threads, &j.rows, &j.width, &j.chunks);
#if QG_SLOTS
    if (f == qg_run_avx2 && !qg_avx2_gemv(p)) {
        j.aw_bytes = (qg_aw_elems(j.rows, p->K) * (int64_t)sizeof(int16_t) + 63) & ~(int64_t)63;
        j.slot_bytes = j.aw_bytes + qg_sc_ymm(j.rows) * (int64_t)sizeof(__m256i);
        j.slots = (unsigned char *)qg_amalloc((size_t)(threads * j.slot_bytes));
        j.id = __atomic_add_fetch(&qg_job_seq, 1, __ATOMIC_RELAXED);
    }
#endif
    const int rc = lnn_parallel(qg_task, &j, tasks, threads);
    qg_afree(j.slots);
    return rc ? -1 : 0;
}
