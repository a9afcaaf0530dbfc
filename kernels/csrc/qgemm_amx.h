/* qgemm_amx.h -- the AMX-INT8 driver, included twice by qgemm.h (no include guard):
 * QGA_EMULATE 0: real tile instructions (QGA_TARGET has amx-tile, amx-int8);
 * QGA_EMULATE 1: the same driver with each tile instruction done in C, to test the blocking.
 *
 * Tiles (all 16 rows x 64 bytes): C 0..3 (int32 16 x 16), A 4..5 (uint8 16 x 64),
 * B 6..7 (int8, 16 rows of 4-k groups x 16 columns = one 64-k slab of a packed block).
 * One step: C[2 i + j] += A[4 + i] . B[6 + j], a 32 x 32 output block per 64-k slab.
 * A is copied per 32-row block into a zero-padded (32, K64) buffer (int8 flipped to uint8);
 * the last, partial 64-k slab of B is copied into zero-padded 1 KB tiles. */

#if QGA_EMULATE
#ifndef QG_EMU_TILES_DEFINED
#define QG_EMU_TILES_DEFINED
typedef struct {
    uint8_t t[8][16][64];
} qg_emu_tiles;

static void qg_emu_load(qg_emu_tiles *s, int t, const void *base, int64_t stride) {
    for (int r = 0; r < 16; r++) memcpy(s->t[t][r], (const uint8_t *)base + r * stride, 64);
}

static void qg_emu_store(qg_emu_tiles *s, int t, void *base, int64_t stride) {
    for (int r = 0; r < 16; r++) memcpy((uint8_t *)base + r * stride, s->t[t][r], 64);
}

/* tdpbusd: C[m][n] += sum_{k < 16} sum_{j < 4} A[m][4k + j] (u8) * B[k][4n + j] (s8) */
static void qg_emu_dpbusd(qg_emu_tiles *s, int c, int a, int b) {
    for (int m = 0; m < 16; m++)
        for (int n = 0; n < 16; n++) {
            uint32_t acc;
            memcpy(&acc, &s->t[c][m][4 * n], 4);
            for (int k = 0; k < 16; k++)
                for (int j = 0; j < 4; j++)
                    acc += (uint32_t)s->t[a][m][4 * k + j] *
                           (uint32_t)(int32_t)(int8_t)s->t[b][k][4 * n + j];
            memcpy(&s->t[c][m][4 * n], &acc, 4);
        }
}
#endif
#define QGA_STATE qg_emu_tiles emu_;
#define QGA_CONFIG(cfg) (void)(cfg)
#define QGA_ZERO(i) memset(emu_.t[i], 0, sizeof emu_.t[i])
#define QGA_LOAD(t, base, stride) qg_emu_load(&emu_, t, base, stride)
#define QGA_DP(c, a, b) qg_emu_dpbusd(&emu_, c, a, b)
#define QGA_STORE(t, base, stride) qg_emu_store(&emu_, t, base, stride)
#define QGA_RELEASE() ((void)0)
#else
#define QGA_STATE
/* gcc 12's ldtilecfg asm names only 8 bytes of the config as its input, so stores to the rest
 * of it may be dropped: let the config escape through a compiler memory barrier first. */
#define QGA_CONFIG(cfg)                                                                            \
    do {                                                                                           \
        __asm__ __volatile__("" : : "r"(cfg) : "memory");                                          \
        _tile_loadconfig(cfg);                                                                     \
    } while (0)
#define QGA_ZERO(t) _tile_zero(t)
#define QGA_LOAD(t, base, stride) _tile_loadd(t, base, stride)
#define QGA_DP(c, a, b) _tile_dpbusd(c, a, b)
#define QGA_STORE(t, base, stride) _tile_stored(t, base, stride)
#define QGA_RELEASE() _tile_release()
#endif

__attribute__((target(QGA_TARGET))) static int QGA_NAME(const qg_args *p, int64_t nb_lo,
                                                         int64_t nb_hi) {
    const int64_t M = p->M, K = p->K, Kp = qg_kp(K), K64 = (K + 63) & ~(int64_t)63;
    const int64_t KT = K64 / 64, KT_full = Kp / 64; /* slabs; those whole in the packing */
    const uint8_t flip = p->a_signed ? 0x80 : 0;
    uint8_t *abuf = (uint8_t *)qg_amalloc((size_t)(32 * K64));
    int8_t *btail = KT_full < KT ? (int8_t *)qg_amalloc((size_t)((nb_hi - nb_lo) * 1024)) : NULL;
    int32_t *cbuf = (int32_t *)qg_amalloc(32 * 32 * sizeof(int32_t));
    if (!abuf || !cbuf || (KT_full < KT && !btail)) {
        qg_run_avx512vnni(p, nb_lo, nb_hi); /* no memory for the buffers: the same bits */
        goto done;
    }
    if (btail) {
        /* btail[nb] = packed[nb, 16 KT_full :, :, :] zero padded to 16 groups */
        const int64_t rows = (Kp - 64 * KT_full) / 4;
        for (int64_t nb = nb_lo; nb < nb_hi; nb++) {
            int8_t *t = btail + (nb - nb_lo) * 1024;
            memset(t, 0, 1024);
            memcpy(t, p->b + nb * 16 * Kp + KT_full * 1024, (size_t)(rows * 64));
        }
    }
    {
        QGA_STATE
        struct {
            uint8_t palette, start_row, reserved[14];
            uint16_t colsb[16];
            uint8_t rows[16];
        } __attribute__((aligned(64))) cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.palette = 1;
        for (int t = 0; t < 8; t++) {
            cfg.colsb[t] = 64;
            cfg.rows[t] = 16;
        }
        QGA_CONFIG(&cfg);
        for (int64_t m0 = 0; m0 < M; m0 += 32) {
            const int64_t mr = M - m0 < 32 ? M - m0 : 32;
            /* abuf[:mr, :K] = a[m0 : m0 + mr] ^ flip, zero elsewhere */
            memset(abuf, 0, (size_t)(32 * K64));
            for (int64_t r = 0; r < mr; r++) {
                const uint8_t *a = p->a + (m0 + r) * K;
                uint8_t *d = abuf + r * K64;
                for (int64_t k = 0; k < K; k++) d[k] = a[k] ^ flip;
            }
            for (int64_t nb = nb_lo; nb < nb_hi; nb += 2) {
                const int64_t nb1 = nb + 1 < nb_hi ? nb + 1 : nb; /* odd count: repeat */
                /* C = abuf @ w[16 nb : 16 nb + 32].T, slab by slab */
                QGA_ZERO(0);
                QGA_ZERO(1);
                QGA_ZERO(2);
                QGA_ZERO(3);
                for (int64_t kt = 0; kt < KT; kt++) {
                    const int8_t *b0 = kt < KT_full ? p->b + nb * 16 * Kp + kt * 1024
                                                    : btail + (nb - nb_lo) * 1024;
                    const int8_t *b1 = kt < KT_full ? p->b + nb1 * 16 * Kp + kt * 1024
                                                    : btail + (nb1 - nb_lo) * 1024;
                    QGA_LOAD(4, abuf + kt * 64, K64);
                    QGA_LOAD(6, b0, 64);
                    QGA_LOAD(7, b1, 64);
                    QGA_DP(0, 4, 6);
                    QGA_DP(1, 4, 7);
                    if (mr > 16) {
                        QGA_LOAD(5, abuf + 16 * K64 + kt * 64, K64);
                        QGA_DP(2, 5, 6);
                        QGA_DP(3, 5, 7);
                    }
                }
                QGA_STORE(0, cbuf, 128);
                QGA_STORE(1, cbuf + 16, 128);
                if (mr > 16) {
                    QGA_STORE(2, cbuf + 16 * 32, 128);
                    QGA_STORE(3, cbuf + 16 * 32 + 16, 128);
                }
                for (int64_t r = 0; r < mr; r++) /* row r: nb's 16 columns, then nb1's */
                    qg_epi512_tile(p, m0 + r, 1, nb * 16, (const __m512i *)(cbuf + r * 32),
                                   nb1 != nb ? 2 : 1);
            }
        }
        QGA_RELEASE();
    }
done:
    qg_afree(abuf);
    qg_afree(btail);
    qg_afree(cbuf);
    return 0;
}

#undef QGA_STATE
#undef QGA_CONFIG
#undef QGA_ZERO
#undef QGA_LOAD
#undef QGA_DP
#undef QGA_STORE
#undef QGA_RELEASE
#undef QGA_NAME
#undef QGA_TARGET
#undef QGA_EMULATE
