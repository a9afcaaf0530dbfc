/* qgemm_avx2.h -- the exact AVX2 int8 GEMM (no VNNI), included once by qgemm.h.
 *
 * Without VNNI, the tile kernel (M > QG_GEMV_ROWS = 1) widens both operands to s16 for
 * vpmaddwd (s16 x s16 pairs summed in s32, exact):
 *   a  once per block of QG_MC2 rows into aw int16 (L2-resident), interleaved by 6-row tile:
 *      aw[t, g, r, j] = a[6 t + r, 4 g + j]   (one stream of 48 bytes per 4-k step),
 *   w  on the fly: 16 packed bytes (4 columns x 4 k) -> vpmovsxbw -> one ymm,
 * and each vpmaddwd of a broadcast 4-k group of a row (vpbroadcastq) with such a ymm adds 16
 * products into acc lanes (column c, k pair 01 / 23); the pairs are folded once per tile.
 *
 * Register tile: QG_MR2 = 6 rows x 8 columns: 12 accumulators + 2 weight ymm + 1 broadcast +
 * 1 product = the 16 ymm registers. Per 4-k step: 12 vpmaddwd + 12 vpaddd (192 multiply-adds),
 * 2 vpmovsxbw loads (each reused by 6 rows), 6 broadcasts. Rows left over (M % 6 < 3) use a
 * 1 or 2 row x 16 column tile, which needs fewer registers. Loop order: blocks of QG_MC2 rows
 * (widened once, L2); in a block, for each 16-column weight block and each K block of 4 QG_KC2
 * k, the 4 KiB weight panel (L1) meets every 6-row tile; the tiles' accumulators wait in a
 * scratch between K blocks (without K blocks a 16 KiB panel for K = 1024 was evicted by the
 * A stream: 1.4x slower at M = 64 and 256).
 *
 * Cost model (Zen 3: vpmaddwd and vpmaddubsw 2 per cycle on the multiply pipes, 4 vector
 * pipes): ~32 vector uops per 192 multiply-adds, >= 6 cycles on the multipliers, ~8 on all
 * pipes. The tile this replaced (2 x 16) spent 8 vpmaddwd + 8 vpaddd + 4 vpmovsxbw + 2
 * broadcasts per 128 and streamed all of W from L3 for every 2 rows. The signed-activation
 * form of the GEMV below (vpxor + vpmaddubsw + vpmaddwd(ones) + vpaddd per 32 multiply-adds,
 * exact for every int8 weight) spends as many multiply-pipe uops per multiply-add as
 * vpmaddwd here (2 per 32): as a tile kernel it measured 0.90-0.95 of this one at M >= 64
 * (commit 7437750, reverted; benchmarks/q8_step_ceiling.c gives the two steps' ceilings). */

#define QG_MR2 6
#ifndef QG_KC2
#define QG_KC2 64 /* 4-k groups per K block: 256 k */
#endif
#ifndef QG_MC2
#define QG_MC2 96 /* rows widened per block: 96 x 1024 x 2 bytes = 192 KiB of L2 */
#endif

/* The full tile's n >= 1 steps (6 rows x 8 columns, 4 k each; ag, bg: its first step's
 * widened rows and packed weights) on the accumulators c[4 r + q], q < 2, read from in (NULL:
 * zeros) and written to out, in assembly: gcc 12, building with -fwrapv as setup.py does, spilled one of the 12
 * accumulators of the C loop to the stack (a store and a reload every step: 27 % slower)
 * once the tile sat in qg_block_avx2. Here the 16 ymm registers are assigned by hand:
 * ymm4-15 the accumulators, ymm0-1 the weight quads, ymm2 the broadcast, ymm3 a product.
 * Per step, as the C loop: 2 vpmovsxbw, 6 vpbroadcastq, 12 vpmaddwd + vpaddd. */
#if defined(__x86_64__)
#define QG_ROW6(OA, A0, A1)                                                                        \
    "vpbroadcastq " #OA "(%[a]), %%ymm2\n\t"                                                       \
    "vpmaddwd %%ymm0, %%ymm2, %%ymm3\n\t"                                                          \
    "vpaddd %%ymm3, %%ymm" #A0 ", %%ymm" #A0 "\n\t"                                                \
    "vpmaddwd %%ymm1, %%ymm2, %%ymm2\n\t"                                                          \
    "vpaddd %%ymm2, %%ymm" #A1 ", %%ymm" #A1 "\n\t"
#define QG_STEP6(OA, OB)                                                                           \
    "vpmovsxbw " #OB "(%[b]), %%ymm0\n\t"                                                          \
    "vpmovsxbw 16+" #OB "(%[b]), %%ymm1\n\t" QG_ROW6(OA, 4, 5) QG_ROW6(8 + OA, 6, 7)             \
        QG_ROW6(16 + OA, 8, 9) QG_ROW6(24 + OA, 10, 11) QG_ROW6(32 + OA, 12, 13)                  \
            QG_ROW6(40 + OA, 14, 15)
#define QG_ACC6(OP)                                                                                \
    OP(0, 4) OP(32, 5) OP(128, 6) OP(160, 7) OP(256, 8) OP(288, 9) OP(384, 10) OP(416, 11)        \
        OP(512, 12) OP(544, 13) OP(640, 14) OP(672, 15)
#define QG_LD6(O, R) "vmovdqa " #O "(%[in]), %%ymm" #R "\n\t"
#define QG_ZERO6(O, R) "vpxor %%xmm" #R ", %%xmm" #R ", %%xmm" #R "\n\t"
#define QG_ST6(O, R) "vmovdqa %%ymm" #R ", " #O "(%[out])\n\t"
static inline __attribute__((target("avx2,fma"), always_inline)) void
qg_steps_6x8(const int16_t *ag, const int8_t *bg, int64_t n, const __m256i *in, __m256i *out) {
    __asm__ volatile("test %[in], %[in]\n\t"
                     "jz 4f\n\t" QG_ACC6(QG_LD6) "jmp 5f\n\t"
                     "4:\n\t" QG_ACC6(QG_ZERO6) "5:\n\t"
                     "test $1, %[n]\n\t"
                     "jz 2f\n\t" /* an odd count: one step first */
                     QG_STEP6(0, 0) "add $48, %[a]\n\t"
                     "add $64, %[b]\n\t"
                     "sub $1, %[n]\n\t"
                     "jz 3f\n\t"
                     ".p2align 5\n\t"
                     "2:\n\t" QG_STEP6(0, 0) QG_STEP6(48, 64) "add $96, %[a]\n\t"
                     "add $128, %[b]\n\t"
                     "sub $2, %[n]\n\t"
                     "jnz 2b\n\t"
                     "3:\n\t" QG_ACC6(QG_ST6)
                     : [a] "+r"(ag), [b] "+r"(bg), [n] "+r"(n)
                     : [in] "r"(in), [out] "r"(out)
                     : "cc", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",
                       "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",
                       "xmm15");
}
#endif

/* One MR x (4 NQ) tile (NQ = 2 or 4 column quads starting at quad q0 of block nb) over the
 * 4-k groups [g0, g1) of one K block. aw: the tile's rows widened to int16,
 * aw[g, r, j] = a[m0 + r, 4 g + j] (r < QG_MR2). The accumulators come from (g0 > 0) and go
 * back to (g1 < G) sc[4 r + q0 + q]; after the last K block the epilogue writes out. */
static inline __attribute__((target("avx2,fma"), always_inline)) void
qg_tile_avx2(const qg_args *p, int64_t m0, const int MR, int64_t nb, const int q0, const int NQ,
             const int16_t *aw, int64_t g0, int64_t g1, __m256i *sc) {
    const int64_t Kp = qg_kp(p->K), G = Kp >> 2;
    const int8_t *bp = p->b + nb * 16 * Kp + 16 * q0;
    __m256i done[QG_MR2 * 4]; /* the sums after the last K block, done[4 r + q] */
#if defined(__x86_64__)
    if (MR == 6 && NQ == 2) { /* the full tile: its steps in assembly (qg_steps_6x8) */
        qg_steps_6x8(aw + g0 * QG_MR2 * 4, bp + g0 * 64, g1 - g0, g0 ? sc + q0 : NULL,
                     g1 < G ? sc + q0 : done);
        if (g1 < G) return; /* more K blocks to come */
    } else
#endif
    {
        /* acc[r][q] lanes: (c0, k01) (c0, k23) (c1, k01) (c1, k23) | the same for c2, c3 */
        __m256i acc[QG_MR2][4];
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
            for (int q = 0; q < NQ; q++)
                acc[r][q] = g0 ? _mm256_load_si256(sc + 4 * r + q0 + q) : _mm256_setzero_si256();
#pragma GCC unroll 2
        for (int64_t g = g0; g < g1; g++) {
            __m256i bw[4];
#pragma GCC unroll 4
            for (int q = 0; q < NQ; q++) /* NumPy: w[c0 : c0 + 4, 4g : 4g + 4].astype(int16) */
                bw[q] = _mm256_cvtepi8_epi16(
                    _mm_loadu_si128((const __m128i *)(bp + g * 64 + 16 * q)));
#pragma GCC unroll 6
            for (int r = 0; r < MR; r++) {
                int64_t a4;
                memcpy(&a4, aw + (g * QG_MR2 + r) * 4, 8);
                const __m256i av = _mm256_set1_epi64x(a4); /* a[r, 4g : 4g + 4], each quarter */
#pragma GCC unroll 4
                for (int q = 0; q < NQ; q++) /* vpmaddwd: a0 w0 + a1 w1 in int32, exact */
                    acc[r][q] = _mm256_add_epi32(acc[r][q], _mm256_madd_epi16(av, bw[q]));
            }
        }
        if (g1 < G) { /* more K blocks to come */
#pragma GCC unroll 6
            for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
                for (int q = 0; q < NQ; q++) _mm256_store_si256(sc + 4 * r + q0 + q, acc[r][q]);
            return;
        }
        /* spill once with constant indices (keeps acc in registers inside the loop above) */
#pragma GCC unroll 24
        for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
            for (int q = 0; q < NQ; q++) done[r * 4 + q] = acc[r][q];
    }
    /* fold k pairs: hadd -> [c0 c1 c4 c5 | c2 c3 c6 c7], then order the 64-bit pairs */
    __m256i s[QG_MR2 * 2]; /* s[r NQ / 2 + q / 2]: row r's columns 4 (q0 + q) .. + 7 */
    for (int r = 0; r < MR; r++)
        for (int q = 0; q < NQ; q += 2)
            s[r * (NQ / 2) + q / 2] = _mm256_permute4x64_epi64(
                _mm256_hadd_epi32(done[r * 4 + q], done[r * 4 + q + 1]), 0xD8);
    qg_epi256_tile(p, m0, MR, nb * 16 + 4 * q0, s, NQ / 2, 0);
}

/* ------------------------------------------------------------------ a few rows: the GEMV
 * At a batch of a few rows each weight byte is used once or twice, so the work is streaming
 * W through the multipliers, and this GEMV on signed activations does it with vpmaddubsw
 * (32 multiply-adds a uop) and no widening pass. The activations are made signed,
 *     a'[k] = q[k] - 128 in [-128, 127]     (q ^ 0x80),
 *     sum_k (q[k] - zp) w[n, k] = sum_k a'[k] w[n, k] - (zp - 128) colsum[n],
 * and vpmaddubsw (uint8 x int8 pairs summed in int16: 32 multiply-adds per uop) gets the
 * magnitude |a'| in 0..128 as its unsigned operand and the weight, bitwise negated where
 * a' < 0, as its signed one (m = 0xFF where a' < 0, else 0; ~w = -w - 1):
 *     |a'| (w ^ m) = a' w                 (a' >= 0)
 *                  = -a' (-w - 1) = a' w + a'   (a' < 0)
 * so  sum_k |a'[k]| (w[n, k] ^ m[k]) = sum_k a'[k] w[n, k] + C,  C = sum_k min(a'[k], 0),
 * one number per row, subtracted from every column. (vpsignb would give a' w directly but
 * runs on the multiply pipes on Zen 3: 1.5 cycles per 32 weights instead of ~1.15; and it
 * would saturate -(-128).)
 * vpmaddubsw saturates its int16 pair sums; here they cannot leave [-32768, 32767] for any
 * int8 weights (-128 included): where a' >= 0, |a'| <= 127 and w in [-128, 127] give
 * products in [-16256, 16129]; where a' < 0, |a'| <= 128 and w ^ m = ~w in [-128, 127] give
 * [-16384, 16256]; so a pair sums to [-32768, 32512] (tests/test_qgemv.py checks every
 * (a', w) pair of int8 values). vpmaddwd with ones then adds the pairs of a column in
 * int32, exact while 128 * 128 * K < 2^31 (qgemm.pyx refuses K > 65793 anyway), and the
 * epilogue is qgemm.h's own (qg_epi256), so every output is bit for bit what qlinear gives.
 *
 * Cost model (Zen 3): per ymm of weights (8 columns x 4 k) a load and 4 vector uops (vpxor,
 * vpmaddubsw, vpmaddwd, vpaddd; 2 of them on the two multiply pipes): ~1 cycle per 32
 * multiply-adds = 32 bytes of W, about what L2 delivers per cycle; measured ~1.15. The
 * 784-512-256-10 layers (535k multiply-adds with N padded to 16) need >= ~16.7k cycles.
 * Columns run 64 at a time (8 accumulators, 4 sequential 64-byte streams of W); rows one
 * after another (each re-reads W from L2: the chain is meant for a few rows at most).
 *
 * qg_run_avx2 runs a single row this way (when the column sums are given): 1.43-1.52x the
 * tile kernel's speed at M = 1 (CPU-time A/B, K = N = 1024 and 131 x 29). At 2-4 rows each
 * row re-reads W: 0.80-0.99 for a 1 MB W (from L3), 1.05-1.23 for 128 KB (L2), so larger
 * M stay on the tile kernel; qgemv.h's chain (small layers, up to 4 rows) calls the GEMV
 * directly. */
#define QG_GEMV_ROWS 1

/* acc += d (vpaddd) in acc's own ymm register: with the plain intrinsic gcc 12 hoisted all
 * eight loads + vpxor of a step ahead of the multiplies and spilled two accumulators to the
 * stack (25 % slower); with an empty asm keeping acc in a register it added into a temporary
 * and copied it back (a vmovdqa per accumulator, 8 of a step's 46 instructions: 38 now). */
#define QV_ADD_IN_PLACE(acc, d) __asm__("vpaddd %1, %0, %0" : "+x"(acc) : "x"(d))

/* The columns [16 nb0, 16 nb0 + 8 V) of row m: acc[v] (8 columns each, V of them: 2 per
 * 16-column block, 1 when a layer's last block has <= 8 columns) over every 4-k group, then
 * the epilogue. ua / ma: the row's |a'| and sign mask (4-byte groups, zero past K);
 * c = C = sum min(a', 0) (the rows' share the xor adds, see the top). */
static inline __attribute__((target("avx2,fma"), always_inline)) void
qv_tile(const qg_args *p, int64_t m, int64_t nb0, const int V, const uint8_t *ua,
        const uint8_t *ma, int32_t c) {
    const int64_t Kp = qg_kp(p->K), G = Kp >> 2, bstep = 16 * Kp;
    const int8_t *bp = p->b + nb0 * bstep;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[8];
#pragma GCC unroll 8
    for (int v = 0; v < V; v++) acc[v] = _mm256_setzero_si256();
    for (int64_t g = 0; g < G; g++) {
        /* |a'[4g : 4g + 4]| and its sign mask in every 4-byte lane */
        const __m256i av = _mm256_set1_epi32((int)qg_load4(ua + 4 * g)),
                      mv = _mm256_set1_epi32((int)qg_load4(ma + 4 * g));
#pragma GCC unroll 8
        for (int v = 0; v < V; v++) {
            /* NumPy: acc[v] += a'[4g : 4g + 4] @ w[n_v : n_v + 8, 4g : 4g + 4].T + C's
             * share, as |a'| (w ^ m) in int16 pairs (exact: |w| <= 127), then int32 */
            const __m256i w = _mm256_loadu_si256(
                (const __m256i *)(bp + (v >> 1) * bstep + g * 64 + 32 * (v & 1)));
            const __m256i pr = _mm256_maddubs_epi16(av, _mm256_xor_si256(w, mv));
            QV_ADD_IN_PLACE(acc[v], _mm256_madd_epi16(pr, ones));
        }
    }
    /* spill once with constant indices (keeps acc in registers inside the loop above);
     * NumPy: acc -= C */
    __m256i done[8];
    const __m256i cv = _mm256_set1_epi32(c);
#pragma GCC unroll 8
    for (int v = 0; v < V; v++) done[v] = _mm256_sub_epi32(acc[v], cv);
    /* sum (q - zp) w = sum a' w - (zp - 128) cs: the offset less 128 */
    qg_epi256_tile(p, m, 1, nb0 * 16, done, V, -128);
}

/* Row a (K activation bytes) prepared for qv_tile: ua = |a'| and ma = its sign mask (Kp bytes
 * each, zero past K), a' = a ^ flip as int8 (flip 0x80: uint8 q, a' = q - 128; flip 0: int8
 * activations, a' = a). Returns C = sum min(a', 0). */
__attribute__((target("avx2,fma"))) static int32_t qv_prep_row(const uint8_t *a, int64_t K,
                                                               uint8_t fl, uint8_t *ua,
                                                               uint8_t *ma) {
    const int64_t Kp = qg_kp(K);
    /* NumPy: s = (a ^ flip).astype(int8); ua = |s| as uint8; ma = 0xFF where s < 0;
     * C = s[s < 0].sum(); zero for k >= K */
    const __m256i flip = _mm256_set1_epi8((char)fl), zero = _mm256_setzero_si256();
    __m256i neg = zero; /* sum of |s| where s < 0, in 4 uint64 lanes */
    int64_t k = 0, c = 0;
    for (; k + 32 <= K; k += 32) {
        const __m256i s = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(a + k)), flip);
        const __m256i u = _mm256_abs_epi8(s), mk = _mm256_cmpgt_epi8(zero, s);
        _mm256_storeu_si256((__m256i *)(ua + k), u);
        _mm256_storeu_si256((__m256i *)(ma + k), mk);
        neg = _mm256_add_epi64(neg, _mm256_sad_epu8(_mm256_and_si256(u, mk), zero));
    }
    for (; k < Kp; k++) {
        const int s = k < K ? (int)(int8_t)(a[k] ^ fl) : 0;
        ua[k] = (uint8_t)(s < 0 ? -s : s);
        ma[k] = s < 0 ? 0xFF : 0;
        c += s < 0 ? s : 0;
    }
    int64_t nb4[4];
    memcpy(nb4, &neg, sizeof nb4);
    return (int32_t)(c - (nb4[0] + nb4[1] + nb4[2] + nb4[3]));
}

/* Row m of p over the column blocks [nb_lo, nb_hi), its ua / ma / c from qv_prep_row. */
__attribute__((target("avx2,fma"))) static void qv_gemv_cols(const qg_args *p, int64_t m,
                                                             int64_t nb_lo, int64_t nb_hi,
                                                             const uint8_t *ua, const uint8_t *ma,
                                                             int32_t c) {
    int64_t nb = nb_lo;
    for (; nb + 4 <= nb_hi; nb += 4) qv_tile(p, m, nb, 8, ua, ma, c);
    /* the last 1-3 blocks: 2 vectors each, 1 when only <= 8 columns are left (N = 1: 1) */
    int64_t v = 2 * (nb_hi - nb), cols = p->N - 16 * nb;
    if (v > (cols + 7) >> 3) v = (cols + 7) >> 3;
    switch (v) {
    case 6:
    case 5: qv_tile(p, m, nb, 6, ua, ma, c); break; /* (the 6th vector not stored) */
    case 4:
    case 3: qv_tile(p, m, nb, 4, ua, ma, c); break;
    case 2: qv_tile(p, m, nb, 2, ua, ma, c); break;
    case 1: qv_tile(p, m, nb, 1, ua, ma, c); break;
    default: break;
    }
}

/* Row m of p over the column blocks [nb_lo, nb_hi); ua, ma: Kp bytes of scratch each. */
__attribute__((target("avx2,fma"))) static void qv_gemv_avx2(const qg_args *p, int64_t m,
                                                             int64_t nb_lo, int64_t nb_hi,
                                                             uint8_t *ua, uint8_t *ma) {
    const int32_t c = qv_prep_row(p->a + m * p->K, p->K, p->a_signed ? 0 : 0x80, ua, ma);
    qv_gemv_cols(p, m, nb_lo, nb_hi, ua, ma, c);
}

/* Elements of the int16 buffer that holds up to `rows` rows widened (qg_pack_avx2), and
 * ymm of the accumulators' scratch for them (6 x 4 per 6-row tile: 12 KiB for 96 rows). */
static inline int64_t qg_aw_elems(int64_t rows, int64_t K) {
    return ((rows + QG_MR2 - 1) / QG_MR2) * QG_MR2 * qg_kp(K) + 4;
}
static inline int64_t qg_sc_ymm(int64_t rows) { return ((rows + QG_MR2 - 1) / QG_MR2) * QG_MR2 * 4; }

/* The rows [mc, mc_end) (at most QG_MC2) of p's activations widened for qg_tile_avx2:
 * aw[t, g, r, j] = (a[mc + 6 t + r, 4 g + j] ^ flip) as int16, zero for k >= K. */
__attribute__((target("avx2,fma"))) static void qg_pack_avx2(const qg_args *p, int64_t mc,
                                                             int64_t mc_end, int16_t *aw) {
    const int64_t K = p->K, Kp = qg_kp(K);
    const uint8_t flip = p->a_signed ? 0x80 : 0;
    const __m128i flipv = _mm_set1_epi8((char)flip);
    for (int64_t i = 0; i < mc_end - mc; i++) {
        const uint8_t *a = p->a + (mc + i) * K;
        int16_t *d = aw + (i / QG_MR2) * QG_MR2 * Kp + (i % QG_MR2) * 4;
        int64_t k = 0;
        for (; k + 16 <= K; k += 16) { /* 16 bytes -> 4 groups of 4 int16, 48 bytes apart */
            const __m256i v = _mm256_cvtepu8_epi16(
                _mm_xor_si128(_mm_loadu_si128((const __m128i *)(a + k)), flipv));
            const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
            int16_t *o = d + (k >> 2) * QG_MR2 * 4;
            _mm_storel_epi64((__m128i *)o, lo);
            _mm_storeh_pd((double *)(o + QG_MR2 * 4), _mm_castsi128_pd(lo));
            _mm_storel_epi64((__m128i *)(o + 2 * QG_MR2 * 4), hi);
            _mm_storeh_pd((double *)(o + 3 * QG_MR2 * 4), _mm_castsi128_pd(hi));
        }
        for (; k < Kp; k++)
            d[(k >> 2) * QG_MR2 * 4 + (k & 3)] = k < K ? (int16_t)(uint8_t)(a[k] ^ flip) : 0;
    }
}

/* out[mc : mc_end, 16 nb_lo : 16 nb_hi] from the rows widened by qg_pack_avx2 (aw); sc: the
 * tiles' accumulators between K blocks, 6 x 4 ymm per 6-row tile (64-byte aligned). */
__attribute__((target("avx2,fma"))) static void qg_block_avx2(const qg_args *p, int64_t mc,
                                                              int64_t mc_end, const int16_t *aw,
                                                              __m256i *sc, int64_t nb_lo,
                                                              int64_t nb_hi) {
    const int64_t Kp = qg_kp(p->K), G = Kp >> 2;
    /* K blocks of QG_KC2 groups: a 16-column weight panel of 16 x 4 QG_KC2 bytes (4 KiB)
     * stays in L1 while every 6-row tile of the block passes over it */
    for (int64_t nb = nb_lo; nb < nb_hi; nb++)
        for (int64_t g0 = 0; g0 < G; g0 += QG_KC2) {
            const int64_t g1 = G - g0 < QG_KC2 ? G : g0 + QG_KC2;
            for (int64_t m0 = mc; m0 < mc_end; m0 += QG_MR2) {
                const int16_t *at = aw + (m0 - mc) * Kp; /* tile t = (m0 - mc) / 6 */
                __m256i *st = sc + (m0 - mc) / QG_MR2 * QG_MR2 * 4;
                switch (mc_end - m0 < QG_MR2 ? (int)(mc_end - m0) : QG_MR2) {
                case 1: qg_tile_avx2(p, m0, 1, nb, 0, 4, at, g0, g1, st); break;
                case 2: qg_tile_avx2(p, m0, 2, nb, 0, 4, at, g0, g1, st); break;
                case 3:
                    qg_tile_avx2(p, m0, 3, nb, 0, 2, at, g0, g1, st);
                    qg_tile_avx2(p, m0, 3, nb, 2, 2, at, g0, g1, st);
                    break;
                case 4:
                    qg_tile_avx2(p, m0, 4, nb, 0, 2, at, g0, g1, st);
                    qg_tile_avx2(p, m0, 4, nb, 2, 2, at, g0, g1, st);
                    break;
                case 5:
                    qg_tile_avx2(p, m0, 5, nb, 0, 2, at, g0, g1, st);
                    qg_tile_avx2(p, m0, 5, nb, 2, 2, at, g0, g1, st);
                    break;
                default:
                    qg_tile_avx2(p, m0, 6, nb, 0, 2, at, g0, g1, st);
                    qg_tile_avx2(p, m0, 6, nb, 2, 2, at, g0, g1, st);
                    break;
                }
            }
        }
}

/* The AVX2 tile kernel takes this single row to the GEMV (qv_gemv_avx2) */
static inline int qg_avx2_gemv(const qg_args *p) { return p->M <= QG_GEMV_ROWS && p->cs; }

/* 0, or -1 when the tile kernel's scratch could not be allocated (nothing written then) */
__attribute__((target("avx2,fma"))) static int qg_run_avx2(const qg_args *p, int64_t nb_lo,
                                                           int64_t nb_hi) {
    const int64_t Kp = qg_kp(p->K);
    if (qg_avx2_gemv(p)) { /* a few rows: one pass over W each */
        uint8_t *ua = (uint8_t *)lnn_malloc((size_t)(2 * Kp));
        if (ua) { /* without its scratch, the tile kernel below gives the same bits */
            for (int64_t m = 0; m < p->M; m++) qv_gemv_avx2(p, m, nb_lo, nb_hi, ua, ua + Kp);
            free(ua);
            return 0;
        }
    }
    const int64_t mc_rows = p->M < QG_MC2 ? p->M : QG_MC2;
    int16_t *aw = (int16_t *)lnn_malloc((size_t)qg_aw_elems(mc_rows, p->K) * sizeof(int16_t));
    __m256i *sc = (__m256i *)qg_amalloc((size_t)qg_sc_ymm(mc_rows) * sizeof(__m256i));
    if (!aw || !sc) {
        free(aw);
        qg_afree(sc);
        return -1;
    }
    for (int64_t mc = 0; mc < p->M; mc += QG_MC2) {
        const int64_t mc_end = mc + QG_MC2 < p->M ? mc + QG_MC2 : p->M;
        qg_pack_avx2(p, mc, mc_end, aw);
        qg_block_avx2(p, mc, mc_end, aw, sc, nb_lo, nb_hi);
    }
    qg_afree(sc);
    free(aw);
    return 0;
}
#if QG_MR2 != 6
#error "update the switch in qg_run_avx2"
#endif
