/* qgemv.h -- int8 Dense layers at a small batch, a whole chain of them in one call.
 *
 * Included by kernels/qgemm.pyx (through qgemv.pxi) after qgemm.h, whose packed weights,
 * activation quantization (qg_quantize_u8), epilogue (qg_epi256) and per-ISA GEMMs (qg_run)
 * it reuses. The spec is ReferenceBackend.qdense_chain_forward: for each layer l,
 *
 *     q, s, zp = quantize_rows(h)              (dynamic, per row; or the static pair)
 *     h = outs[l] = act(((q - zp) @ w_q.T) * (s * w_scale) + bias)      (m, N_l) float32
 *
 * i.e. exactly quantize_rows + qlinear per layer, with no Python in between and the
 * scratch (q, the rows' scale and zero point) allocated once by the caller.
 *
 * The product, on the AVX2 path: the signed-activation GEMV of qgemm_avx2.h (qv_tile; its
 * comment has the exactness argument: |a'| (w ^ m) never saturates vpmaddubsw's int16 pairs,
 * for every int8 weight, -128 included), with each row's |a'|, sign mask and C made once
 * per layer straight from its floats (qgemm_quant.h's qv_quant_split256) and the columns cut
 * into units spread over threads (below; on one thread qv_chain_gemv runs the layers
 * without the units' bookkeeping).
 *
 * Cost model (Zen 3): per ymm of weights (8 columns x 4 k) a load and 4 vector uops (vpxor,
 * vpmaddubsw, vpmaddwd, vpaddd; 2 of them on the two multiply pipes): ~1 cycle per 32
 * multiply-adds = 32 bytes of W, about what L2 delivers per cycle; measured ~1.15. The
 * 784-512-256-10 layers (535k multiply-adds with N padded to 16) need >= ~16.7k cycles.
 * Columns run 64 at a time (8 accumulators, 4 sequential 64-byte streams of W); within those,
 * rows one after another (each re-reads the 64 columns' W from L1/L2: the chain is meant for a
 * few rows at most). Measured on one Zen 3 core (thread CPU time, C harness): the tile loop
 * 1.2 cycles per 32 weight bytes with W in L1 or L2, 1.4 from L3; the whole 784-512-256-10
 * chain ~8.8 us (6.0 + 2.0 + 0.2 us for its layers alone, the rest mostly its 537 KB of W
 * overflowing the 512 KB L2; quantize, sign split and epilogue ~0.5 us). Split over 2 cores
 * (below) each core keeps its ~270 KB share in its own L2.
 *
 * Only the AVX2 path uses this GEMV (the VNNI / AMX paths have an exact u8 x s8 instruction
 * and keep qg_run, which at M = 1 is already one pass over W); every other case runs qg_run,
 * so the chain gives qlinear's bits on every ISA. */
#ifndef LEPTON_QGEMV_H
#define LEPTON_QGEMV_H

#include "qgemm.h"
#include "spin_hint.h"

/* One layer of a chain: qg_args with the weights, scales, bias and activation set once
 * (N, K, b, ws, cs, bias, act); a, M, xs, zp and outf are set per call. */
typedef struct {
    qg_args g;
    const float *fixed_scale; /* static activations: the calibrated pair (1,), else NULL */
    const int32_t *fixed_zp;
} qv_layer;


/* ---- the chain, its layers' columns cut into units spread over `parts` threads ----------
 *
 * A unit is QV_UNIT_NB 16-column blocks of one layer (the GEMV's 64-column tile) for every
 * row, or, for a layer on the tile kernel (qg_run's path), a 1 / parts share of its blocks.
 * Part t owns the units [U t / P, U (t + 1) / P) of each layer (U units, P parts), so at
 * batch 1 each core keeps re-reading the same ~1 / P of the weights (its L2). Each layer:
 *
 *   1. thread t marks the layer started (its done word: 1 + units finished), runs its own
 *      share (each claim one atomic add on part t's counter, a line only it touches unless
 *      it falls behind), quantizing the layer's input itself first (each thread its own
 *      copy: the same bits, and no second barrier);
 *   2. the barrier: it waits until every unit of the layer is done (their outputs are the
 *      next layer's input: with dynamic quantization each row's scale needs the whole row,
 *      so the next layer cannot start on part of it). While waiting it takes the unclaimed
 *      units of a part whose thread has not started the layer (late, or not running: a busy
 *      pool runs the tasks one after another on one thread) at once, and those of a part
 *      whose count has not moved for QV_PATIENCE_NS (its thread preempted);
 *   3. after the last layer a thread returns once every part with units has started it
 *      (the pool's join waits for the rest), without reading the last count.
 *
 * Why this order: the two vCPUs of this machine pass a cache line in 70-300 ns one way, and
 * the time moves with where the host puts them (benchmarks/vcpu_probe.c: a round trip of
 * 140-170 ns in one minute, 480-900 ns in another). A thread that reads or claims from a
 * line the other thread writes pays that each time, on the call's critical path: the earlier
 * design, which looked at every part's counter before each layer and tried the others'
 * shares after its own, paid ~3 such trips a layer per thread even when both kept pace.
 * Now a call's trips are the post, one per barrier (the last writer's count to the waiter)
 * plus the other half of the layer's input, and the join.
 *
 * A thread counts the units it finished on a cache line of its own (done[t], one writer, a
 * plain release store); the barrier sums the P counts. Every counter word carries the call's
 * number (gen, high 48 bits: no wrap in a process's life) beside its count (16 bits): a word
 * of an earlier call counts 0, so nothing is reset between calls (the caller would otherwise
 * have to take back, before posting, the lines the worker wrote last call), and the units per
 * layer are computed once per chain (and ISA), not per call. Waits are for units claimed by a
 * thread that finishes them without waiting, or for units the waiter takes itself, so a job
 * whose tasks run one after another on one thread finishes too. Every output is computed by
 * the same code whichever thread claims it: the same bits at any P.
 *
 * This barrier lives here, in the job's own counters, on plain lnn_parallel (one job, P
 * tasks: task t is part t). */
#define QV_UNIT_NB 4
#ifndef QV_PATIENCE_NS
#define QV_PATIENCE_NS 2000 /* a started part whose count stands still this long: preempted */
#endif
#if defined(__GNUC__) && (defined(__unix__) || defined(__APPLE__))
#define QV_THREADS 1
#include <sched.h>
#include <time.h>
#else
#define QV_THREADS 0 /* no atomics builtins: one part */
#endif

typedef struct {
    const qv_layer *ls;
    int64_t layers, m, kmax;
    const float *x;
    float *const *outs;
    uint8_t *parts_scratch; /* parts x part_bytes */
    int64_t part_bytes;
    int parts;
    uint64_t gen;    /* this call's number: the high bits of every counter word it writes */
    uint64_t *next;  /* next[t * stride + l]: (gen, units of part t's share of layer l claimed) */
    int64_t stride;  /* layers rounded up to 8 (a 64-byte line per part) */
    uint64_t *done;  /* done[t * stride + l]: (gen, units of layer l that thread t finished) */
    const int64_t *units; /* units[l], and unb[l] = units[layers + l]: blocks per unit */
    int64_t *stats;       /* test hook (NULL): per task, units run of its own share, taken
                           * from a part not started, taken from a stalled part */
} qv_job;

#define QV_COUNT_BITS 16
#define QV_COUNT_MAX ((1 << QV_COUNT_BITS) - 1) /* a count's largest value: a layer's units
                                                  * + 1 (the started mark), else one part */

/* The count of counter word v in call g (a word of another call counts 0). */
static inline int64_t qv_count(uint64_t v, uint64_t g) {
    return (v >> QV_COUNT_BITS) == g ? (int64_t)(v & QV_COUNT_MAX) : 0;
}

/* One part's state for its current layer. */
typedef struct {
    qg_args p;
    int gemv;
    uint8_t *ua, *ma; /* m rows of qv_row(K) bytes (ua: q's bytes, see qv_part_bytes) */
    int32_t *c;       /* m */
    int64_t unb;
} qv_cur;

static inline int64_t qv_al64(int64_t n) { return (n + 63) & ~(int64_t)63; }

/* Bytes of a row of q, ua and ma on the GEMV path: K rounded up to a whole ymm. The row's
 * quantized bytes are followed by 0x80 (a' = 0: |a'| 0, mask 0, nothing added to C), so the
 * sign split runs whole vectors only: a byte-at-a-time tail cost ~20 instructions a byte
 * (callgrind, the 32-32-16-1 credit MLP: 3040 -> 2880 a call). */
static inline int64_t qv_row(int64_t K) { return (K + 31) & ~(int64_t)31; }

/* Bytes of one part's scratch: ua, ma (m rows of qv_row(kmax) each), scale, zero point,
 * C (m). The tile kernel's quantized rows q take ua's bytes: the GEMV (ua, ma) never keeps
 * q, the tile kernel never reads ua or ma, and a layer uses one of the two. */
static inline int64_t qv_part_bytes(int64_t m, int64_t kmax) {
    return 2 * qv_al64(m * qv_row(kmax)) + 3 * qv_al64(4 * m);
}

/* Bytes of scratch qv_chain needs: 64 (alignment), every part's, the counters, the units
 * per layer (2 stride words) and a line of the caller's own (gen, and what units were
 * computed for). Zeroed by the caller once (prepare), never between calls. */
static inline int64_t qv_scratch_bytes(int64_t m, int64_t kmax, int64_t layers, int parts) {
    const int64_t stride = (layers + 7) & ~(int64_t)7;
    return 64 + parts * qv_part_bytes(m, kmax) + 8 * (2 * parts * stride + 2 * stride) + 64;
}

/* Quantize layer l's input into part t's scratch and set cur up for its units. */
static void qv_prep(const qv_job *j, int t, int64_t l, qv_cur *cur) {
    const int64_t m = j->m;
    const int64_t rows = qv_al64(m * qv_row(j->kmax));
    uint8_t *q = j->parts_scratch + t * j->part_bytes, *ua = q, *ma = ua + rows;
    float *scale = (float *)(ma + rows);
    int32_t *zp = (int32_t *)((uint8_t *)scale + qv_al64(4 * m));
    int32_t *c = (int32_t *)((uint8_t *)zp + qv_al64(4 * m));
    const float *h = l ? j->outs[l - 1] : j->x;
    qg_args *p = &cur->p;
    *p = j->ls[l].g;
    const int fixed = j->ls[l].fixed_scale != NULL;
    const float *s = fixed ? j->ls[l].fixed_scale : scale;
    const int32_t *z = fixed ? j->ls[l].fixed_zp : zp;
    cur->gemv = 0;
#if LA_X86
    cur->gemv = qg_active == QG_AVX2 && p->K > 0;
#endif
    if (!cur->gemv) /* NumPy: q, s, zp = quantize_rows(h)  (static: the tensor's one pair) */
        qg_quantize_u8(h, m, p->K, !fixed, fixed, q, (float *)s, (int32_t *)z);
    p->a = q; /* (read by the tile kernel only: the GEMV reads ua, ma, c) */
    p->M = m;
    p->a_signed = 0;
    p->xs = s;
    p->xs_step = fixed ? 0 : 1;
    p->zp = z;
    p->zp_step = fixed ? 0 : 1;
    p->outf = j->outs[l];
    p->outi = NULL;
    cur->ua = ua;
    cur->ma = ma;
    cur->c = c;
    cur->unb = j->units[j->layers + l];
#if LA_X86
    if (cur->gemv) { /* row by row into rows of qv_row(K) bytes, padded with a' = 0 */
        const int64_t K = p->K, R = qv_row(K);
        for (int64_t r = 0; r < m; r++)
            /* NumPy: q[r], s[r], zp[r] = quantize_rows(h[r : r + 1]) (static: the pair), with
             * q[r, K:R] = 128, split into ua, ma and C (q itself is not kept) */
            c[r] = qv_quant_split256(h + r * K, K, R, !fixed, (float *)s + !fixed * r,
                                     (int32_t *)z + !fixed * r, ua + r * R, ma + r * R);
    }
#endif
}

/* NumPy: outs[l][:, cols] = act(((q - zp) @ w_q[cols].T) * (s * w_scale[cols]) + bias[cols])
 * for unit u's columns of the current layer; 0, or -1 when the tile kernel had no scratch */
static int qv_unit(const qv_cur *cur, int64_t u) {
    const qg_args *p = &cur->p;
    const int64_t NB = (p->N + 15) >> 4, lo = u * cur->unb;
    const int64_t hi = lo + cur->unb < NB ? lo + cur->unb : NB;
#if LA_X86
    if (cur->gemv) {
        const int64_t R = qv_row(p->K);
        for (int64_t r = 0; r < p->M; r++)
            qv_gemv_cols(p, r, lo, hi, cur->ua + r * R, cur->ma + r * R, cur->c[r]);
        return 0;
    }
#endif
    return (p->K == 0 ? qg_run_portable : qg_impl[qg_active])(p, lo, hi);
}

#ifdef QV_TRACE /* a C harness's timeline (benchmarks/qchain_harness.c); off in the build */
QV_TRACE
#else
#define QV_MARK(t, what) ((void)0)
#endif

#if QV_THREADS
static inline int64_t qv_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void qv_relax(void) {
    LNN_SPIN_HINT();
}

/* part b's share of layer l: units [*lo, *lo + return) */
static inline int64_t qv_share(const qv_job *j, int b, int64_t l, int64_t *lo) {
    const int64_t U = j->units[l];
    *lo = U * b / j->parts;
    return U * (b + 1) / j->parts - *lo;
}

/* thread b's done word for layer l: -1 before b started the layer, else units it finished */
static inline int64_t qv_fin(const qv_job *j, int b, int64_t l) {
    return qv_count(__atomic_load_n(&j->done[b * j->stride + l], __ATOMIC_ACQUIRE), j->gen) - 1;
}

/* The next unit (0-based) of n in counter word *w for call g, or -1 when all are claimed. */
static int64_t qv_claim(uint64_t *w, uint64_t g, int64_t n) {
    uint64_t v = __atomic_load_n(w, __ATOMIC_RELAXED);
    for (;;) {
        const int64_t k = qv_count(v, g);
        if (k >= n) return -1;
        if (__atomic_compare_exchange_n(w, &v, (g << QV_COUNT_BITS) | (uint64_t)(k + 1), 1, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
            return k;
    }
}

/* One thread's state in a layer: its done word, units finished, input prepared. */
typedef struct {
    qv_cur cur;
    uint64_t *mine;
    int64_t ran;
    int prepped, err;
} qv_me;

/* Thread t runs the unclaimed units of part b's share of layer l (stats slot `why`); how
 * many it ran. */
static int64_t qv_run_share(const qv_job *j, int t, int b, int64_t l, qv_me *me, int why) {
    int64_t lo, ran = 0;
    const int64_t n = qv_share(j, b, l, &lo);
    if (n == 0) return 0;
    for (;; ran++) {
        const int64_t k = qv_claim(&j->next[b * j->stride + l], j->gen, n);
        if (k < 0) return ran;
        if (!me->prepped) {
            qv_prep(j, t, l, &me->cur);
            me->prepped = 1;
        }
        if (qv_unit(&me->cur, lo + k) != 0) me->err = -1;
        __atomic_store_n(me->mine, (j->gen << QV_COUNT_BITS) | (uint64_t)(1 + ++me->ran),
                         __ATOMIC_RELEASE);
        if (j->stats) j->stats[3 * t + why]++;
        QV_MARK(t, why ? 200 : 100);
    }
}

/* Part t: every layer, its own share, then the barrier (see above). A unit that fails still
 * counts as done (no thread waits forever); the job returns the failure. */
static int qv_task(void *ctx, ptrdiff_t task) {
    const qv_job *j = (const qv_job *)ctx;
    const int t = (int)task, P = j->parts;
    qv_me me;
    me.err = 0;
    QV_MARK(t, 0);
    for (int64_t l = 0; l < j->layers; l++) {
        const int64_t U = j->units[l], last = l == j->layers - 1;
        int64_t lo;
        me.mine = &j->done[t * j->stride + l];
        me.ran = 0;
        me.prepped = 0;
        __atomic_store_n(me.mine, (j->gen << QV_COUNT_BITS) | 1, __ATOMIC_RELEASE); /* started */
        QV_MARK(t, 1 + 2 * l);
        qv_run_share(j, t, t, l, &me, 0);
        QV_MARK(t, 2 + 2 * l);
        int64_t seen = -1, since = 0;
        for (long spin = 0;; spin++) {
            int64_t fin = 0;
            int absent = 0;
            for (int b = 0; b < P; b++) {
                const int64_t f = qv_fin(j, b, l);
                if (f < 0 && qv_share(j, b, l, &lo) > 0) /* b has not started the layer */
                    absent |= qv_run_share(j, t, b, l, &me, 1) > 0;
                fin += f > 0 ? f : 0;
            }
            if (absent) continue; /* count again: what was taken is now done */
            if (fin >= U || last) break;
            if (fin != seen) { /* progress: the patience starts again */
                seen = fin;
                since = qv_ns();
            } else if (!(spin & 31) && qv_ns() - since > QV_PATIENCE_NS) {
                for (int i = 1; i < P; i++) qv_run_share(j, t, (t + i) % P, l, &me, 2);
                since = qv_ns();
            }
            qv_relax();
            if (!(spin & 255) && spin) sched_yield(); /* a preempted claimer may need this core */
        }
    }
    return me.err;
}
#endif

/* The chain: layer l reads h (m, K_l) (x for l = 0, outs[l - 1] after) and writes outs[l]
 * (m, N_l) = qlinear(quantize_rows(h)), on up to `parts` threads of the shared pool.
 * scratch: qv_scratch_bytes(m, kmax, layers, parts) bytes, any alignment. 0, or -1 when a
 * layer's product had no scratch (only the tile kernel of the AMX path allocates, and it falls
 * back to the same bits without: never here today; outs not all written then). */
static void qv_setup(qv_job *jp, const float *x, int64_t m, int64_t layers, const qv_layer *ls,
                     float *const *outs, uint8_t *scratch, int64_t kmax, int parts) {
#if !QV_THREADS
    parts = 1;
#endif
    qv_job j;
    j.ls = ls;
    j.layers = layers;
    j.m = m;
    j.kmax = kmax;
    j.x = x;
    j.outs = outs;
    j.parts = parts < 1 ? 1 : parts;
    j.part_bytes = qv_part_bytes(m, kmax);
    j.parts_scratch = (uint8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    j.stride = (layers + 7) & ~(int64_t)7;
    j.next = (uint64_t *)(j.parts_scratch + j.parts * j.part_bytes);
    j.done = j.next + j.parts * j.stride;
    int64_t *units = (int64_t *)(j.done + j.parts * j.stride);
    j.units = units;
    j.stats = NULL;
    /* the caller's line: [0] the last call's gen, [1] the ISA + 1 the units are for */
    uint64_t *own = (uint64_t *)(units + 2 * j.stride);
    j.gen = own[0] = own[0] + 1; /* 1, 2, ...: 0 is the words of a fresh scratch */
    if (own[1] == (uint64_t)qg_active + 1) goto run;
    own[1] = (uint64_t)qg_active + 1;
    for (int64_t l = 0; l < layers; l++) {
        const int64_t NB = (ls[l].g.N + 15) >> 4;
        int64_t unb = QV_UNIT_NB; /* the GEMV: 64 columns a unit */
#if LA_X86
        const int gemv = qg_active == QG_AVX2 && ls[l].g.K > 0;
#else
        const int gemv = 0;
#endif
        if (!gemv) /* the tile kernel: one even share of the blocks per part */
            unb = ((NB + j.parts - 1) / j.parts + 1) & ~(int64_t)1;
        if (unb < 1) unb = 1;
        units[l] = (NB + unb - 1) / unb;
        units[layers + l] = unb;
        if (units[l] >= QV_COUNT_MAX) own[1] = 0; /* too wide to count (1 + units): one part */
    }
run:
    if (own[1] == 0) j.parts = 1;
    *jp = j;
}

#if LA_X86
/* The chain on one part, every layer on the AVX2 GEMV (K > 0): per layer and row, what
 * qv_prep and qv_unit do (the quantized row split, then all its columns), without their
 * bookkeeping for parts and units (at batch 1 a small MLP's call was mostly that: callgrind,
 * 32-32-16-1). One row's ua / ma at a time (q, C not kept). */
__attribute__((target("avx2,fma"))) static void qv_chain_gemv(const qv_job *j) {
    const int64_t m = j->m, rows = qv_al64(m * qv_row(j->kmax));
    uint8_t *ua = j->parts_scratch, *ma = ua + rows;
    float *scale = (float *)(ma + rows);
    int32_t *zp = (int32_t *)((uint8_t *)scale + qv_al64(4 * m));
    for (int64_t l = 0; l < j->layers; l++) {
        const qv_layer *ly = &j->ls[l];
        const float *h = l ? j->outs[l - 1] : j->x;
        const int fixed = ly->fixed_scale != NULL;
        qg_args p = ly->g;
        p.a = NULL; /* (the GEMV reads ua, ma) */
        p.M = m;
        p.a_signed = 0;
        p.xs = fixed ? ly->fixed_scale : scale;
        p.xs_step = !fixed;
        p.zp = fixed ? ly->fixed_zp : zp;
        p.zp_step = !fixed;
        p.outf = j->outs[l];
        p.outi = NULL;
        const int64_t K = p.K, R = qv_row(K), NB = (p.N + 15) >> 4;
        for (int64_t r = 0; r < m; r++) {
            /* NumPy: q[r], s[r], zp[r] = quantize_rows(h[r : r + 1]) (static: the pair) */
            const int32_t c =
                qv_quant_split256(h + r * K, K, R, !fixed, (float *)p.xs + !fixed * r,
                                  (int32_t *)p.zp + !fixed * r, ua, ma);
            /* NumPy: outs[l][r] = act(((q[r] - zp[r]) @ w_q.T) * (s[r] * w_scale) + bias) */
            qv_gemv_cols(&p, r, 0, NB, ua, ma, c);
        }
    }
}
#endif

static int qv_chain(const float *x, int64_t m, int64_t layers, const qv_layer *ls,
                    float *const *outs, uint8_t *scratch, int64_t kmax, int parts) {
    if (m == 0) return 0;
    qv_job j;
    qv_setup(&j, x, m, layers, ls, outs, scratch, kmax, parts);
#if QV_THREADS
    if (j.parts > 1) return lnn_parallel(qv_task, &j, j.parts, j.parts) ? -1 : 0;
#endif
#if LA_X86
    int gemv = qg_active == QG_AVX2;
    for (int64_t l = 0; l < layers; l++) gemv &= ls[l].g.K > 0;
    if (gemv) {
        qv_chain_gemv(&j);
        return 0;
    }
#endif
    qv_cur cur;
    for (int64_t l = 0; l < layers; l++) {
        qv_prep(&j, 0, l, &cur);
        for (int64_t u = 0; u < j.units[l]; u++)
            if (qv_unit(&cur, u) != 0) return -1;
    }
    return 0;
}

/* Test hook: one call of the chain with its tasks run one after another on the calling
 * thread, in `order` (n task numbers, each < parts), the parts whose bit is set in `stalled`
 * marked as started on every layer beforehand (a thread that began and then stopped);
 * stats: 3 per part (units of its own share, taken from a part not started, taken from a
 * stalled part). 0; 1 when the chain runs on one part (nothing run); -1 as qv_chain. */
static int qv_chain_tasks(const float *x, int64_t m, int64_t layers, const qv_layer *ls,
                          float *const *outs, uint8_t *scratch, int64_t kmax, int parts,
                          const int *order, int n, unsigned stalled, int64_t *stats) {
#if QV_THREADS
    qv_job j;
    qv_setup(&j, x, m, layers, ls, outs, scratch, kmax, parts);
    if (m == 0 || j.parts < 2) return 1;
    j.stats = stats;
    for (int t = 0; t < j.parts; t++)
        if (stalled >> t & 1)
            for (int64_t l = 0; l < layers; l++)
                j.done[t * j.stride + l] = (j.gen << QV_COUNT_BITS) | 1;
    int err = 0;
    for (int i = 0; i < n; i++)
        if (qv_task(&j, order[i]) != 0) err = -1;
    return err;
#else
    (void)x, (void)m, (void)layers, (void)ls, (void)outs, (void)scratch, (void)kmax;
    (void)parts, (void)order, (void)n, (void)stalled, (void)stats;
    return 1;
#endif
}

#endif /* LEPTON_QGEMV_H */
