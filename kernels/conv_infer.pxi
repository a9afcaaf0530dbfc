# The inference half of kernels/conv.pyx (included at its end, so one module: _conv): the
# direct stride-1 float32 convolution (csrc/conv_direct.h), the chunk kernels run on the shared
# native pool (conv_chunks_threads), and direct convolutions chained image by image.

# -- inference: a stride-1 float32 convolution without im2col (csrc/conv_direct.h) ----------

cdef extern from "conv_direct.h" nogil:
    int lnn_cd_portable
    void lnn_cd_image(const float *x, const float *wp, const float *bias, int act,
                      const lnn_conv_geom *g, const Py_ssize_t *pool, float *s, float *z,
                      float *y)
    void lnn_conv_direct_fwd_f32(const float *x, const float *wp, const float *bias, int act,
                                 const lnn_conv_geom *g, const Py_ssize_t *pool, float *s,
                                 float *z, float *y, int64_t *counter)
    int lnn_cw_fits(const lnn_conv_geom *g, const Py_ssize_t *pool, int act)
    Py_ssize_t lnn_cw_scratch(const lnn_conv_geom *g, const Py_ssize_t *pool)
    void lnn_cw_or_direct(const float *x, const float *wp, const float *u, const float *bias,
                          int act, const lnn_conv_geom *g, const Py_ssize_t *pool, float *s,
                          float *z, float *y)


def conv2d_direct_forward(cnp.ndarray x not None, cnp.ndarray wp not None, b, int act,
                          tuple geom not None, Py_ssize_t oh, Py_ssize_t ow, pool,
                          cnp.ndarray counter not None, cnp.ndarray s not None,
                          cnp.ndarray z not None, cnp.ndarray y not None):
    """Per image n (claimed from counter): y[n] = maxpool(f(w2 @ im2col(x[n]) + b)), or
    f(w2 @ im2col(x[n]) + b) when pool is None; float32, stride 1, wp packed by
    conv2d_direct_pack, s and z this thread's scratch (geometry.conv_direct_scratch).
    Returns y."""
    cdef lnn_conv_geom g
    cdef Py_ssize_t pl[8]
    cdef Py_ssize_t *pp = NULL
    if cnp.PyArray_TYPE(x) != cnp.NPY_FLOAT32:
        raise TypeError(f"conv2d_direct_forward takes float32 arrays, not {x.dtype}")
    cdef cnp.npy_intp *xd = cnp.PyArray_DIMS(x)
    g.n, g.c, g.h, g.w, g.o = xd[0], xd[1], xd[2], xd[3], cnp.PyArray_DIMS(y)[1]
    g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw = geom
    g.oh, g.ow, g.step = oh, ow, 1
    if pool is not None:
        _pool(pl, pool)
        pp = pl
    cdef float *xp = <float *>cnp.PyArray_DATA(x)
    cdef float *wpp = <float *>cnp.PyArray_DATA(wp)
    cdef float *bp = <float *>_opt(b)
    cdef float *sp = <float *>cnp.PyArray_DATA(s)
    cdef float *zp = <float *>cnp.PyArray_DATA(z)
    cdef float *yp = <float *>cnp.PyArray_DATA(y)
    cdef int64_t *cnt = <int64_t *>cnp.PyArray_DATA(counter)
    with nogil:
        lnn_conv_direct_fwd_f32(xp, wpp, bp, act, &g, pp, sp, zp, yp, cnt)
    return y


def conv2d_direct_portable(bint on):
    """Run conv2d_direct_forward's plain C loops (on) or its AVX2 ones where the CPU has them
    (off, the default): a switch for the tests, which check both against the twin."""
    global lnn_cd_portable
    lnn_cd_portable = 1 if on else 0


# -- a chunk kernel on the shared native pool (csrc/pool.h) ---------------------------------

include "pool_bind.pxi"

DEF MAX_SETS = 64

cdef struct _chunk_job:
    int kind  # 0: conv forward, 1: conv + pool forward, 2: direct; + 10 for float64
    const void *x
    const void *w
    const void *b
    void *y
    void *y2  # z (conv forward) or argmax (pooled)
    int act
    lnn_conv_geom g
    Py_ssize_t pool[8]
    Py_ssize_t *pp
    int64_t counter
    void *s0[MAX_SETS]
    void *s1[MAX_SETS]


cdef int _chunk_task(void *ctx, Py_ssize_t t) noexcept nogil:
    cdef _chunk_job *j = <_chunk_job *>ctx
    if j.kind == 0:
        lnn_conv_fwd_chunks_f32(<const float *>j.x, <const float *>j.w, <const float *>j.b,
                                j.act, <float *>j.y2, <float *>j.y, <float *>j.s0[t],
                                &j.counter, &j.g)
    elif j.kind == 10:
        lnn_conv_fwd_chunks_f64(<const double *>j.x, <const double *>j.w, <const double *>j.b,
                                j.act, <double *>j.y2, <double *>j.y, <double *>j.s0[t],
                                &j.counter, &j.g)
    elif j.kind == 1:
        lnn_conv_pool_fwd_chunks_f32(<const float *>j.x, <const float *>j.w,
                                     <const float *>j.b, j.act, <float *>j.s1[t],
                                     <float *>j.y, <int64_t *>j.y2, <float *>j.s0[t],
                                     &j.counter, &j.g, j.pp)
    elif j.kind == 11:
        lnn_conv_pool_fwd_chunks_f64(<const double *>j.x, <const double *>j.w,
                                     <const double *>j.b, j.act, <double *>j.s1[t],
                                     <double *>j.y, <int64_t *>j.y2, <double *>j.s0[t],
                                     &j.counter, &j.g, j.pp)
    else:
        lnn_conv_direct_fwd_f32(<const float *>j.x, <const float *>j.w, <const float *>j.b,
                                j.act, &j.g, j.pp, <float *>j.s0[t], <float *>j.s1[t],
                                <float *>j.y, &j.counter)
    return 0


def conv_chunks_threads(str name, cnp.ndarray x not None, tuple head not None,
                        tuple scratch not None, tuple tail not None, int threads):
    """kernel ``name``(x, *head, counter, *scratch[t], *tail) on ``len(scratch)`` tasks of
    the shared pool, at most ``threads`` at once, with one fresh counter: each task claims
    chunks (images) from it until none are left, so the work spreads over the threads that
    run and the result does not depend on how (each chunk writes its own images). ``name``:
    conv2d_forward_chunks, conv2d_pool_forward_chunks or conv2d_direct_forward, with their
    arguments (the plan's; shapes are the plan's and trusted like theirs). Returns y."""
    cdef _chunk_job j
    cdef Py_ssize_t sets = len(scratch), t, k, p
    if sets < 1 or sets > MAX_SETS:
        raise ValueError(f"conv_chunks_threads takes 1 to {MAX_SETS} scratch sets")
    cdef cnp.ndarray w = <cnp.ndarray?>head[0]
    cdef bint f32 = _is_f32(x)
    j.counter = 0
    j.x, j.w, j.b = cnp.PyArray_DATA(x), cnp.PyArray_DATA(w), _opt(head[1])
    j.act = head[2]
    j.pp = NULL
    y = tail[0]
    if name == "conv2d_direct_forward":
        if not f32:
            raise TypeError(f"conv2d_direct_forward takes float32 arrays, not {x.dtype}")
        j.kind = 2
        _geom_direct(&j.g, x, cnp.PyArray_DIMS(<cnp.ndarray?>y)[1], head[3], head[4], head[5])
        if head[6] is not None:
            _pool(j.pool, head[6])
            j.pp = j.pool
        j.y = cnp.PyArray_DATA(<cnp.ndarray?>y)
        j.y2 = NULL
    elif name == "conv2d_forward_chunks" or name == "conv2d_pool_forward_chunks":
        pooled = name == "conv2d_pool_forward_chunks"
        j.kind = (1 if pooled else 0) + (0 if f32 else 10)
        _geom(&j.g, x, cnp.PyArray_DIMS(w)[0], head[3], head[4], head[5],
              head[7] if pooled else head[6])
        if pooled:
            _pool(j.pool, head[6])
            j.pp = j.pool
            j.y = cnp.PyArray_DATA(<cnp.ndarray?>tail[0])
            j.y2 = cnp.PyArray_DATA(<cnp.ndarray?>tail[1])
        else:
            j.y2 = cnp.PyArray_DATA(<cnp.ndarray?>tail[0])  # z
            j.y = cnp.PyArray_DATA(<cnp.ndarray?>tail[1])
    else:
        raise ValueError(f"no chunk kernel {name!r}")
    for t in range(sets):
        mine = scratch[t]
        if len(mine) != (1 if j.kind % 10 == 0 else 2):
            raise ValueError(f"{name}: scratch set {t} has {len(mine)} arrays")
        j.s0[t] = cnp.PyArray_DATA(<cnp.ndarray?>mine[0])
        j.s1[t] = cnp.PyArray_DATA(<cnp.ndarray?>mine[1]) if len(mine) > 1 else NULL
    with nogil:
        lnn_parallel(_chunk_task, &j, sets, threads)
    return y


cdef int _geom_direct(lnn_conv_geom *g, cnp.ndarray x, Py_ssize_t o, tuple geom, Py_ssize_t oh,
                      Py_ssize_t ow) except -1:
    cdef cnp.npy_intp *xd = cnp.PyArray_DIMS(x)
    g.n, g.c, g.h, g.w, g.o = xd[0], xd[1], xd[2], xd[3], o
    g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw = geom
    g.oh, g.ow, g.step = oh, ow, 1
    return 0


# -- inference: direct convolutions one after the other, image by image --------------------

DEF MAX_CHAIN = 8

cdef struct _chain_layer:
    const float *w
    const float *u  # the Winograd filters (conv_winograd.h) or NULL
    const float *b
    int act
    lnn_conv_geom g
    Py_ssize_t pool[8]
    Py_ssize_t *pp
    Py_ssize_t out  # floats of one image's output


cdef struct _chain_job:
    Py_ssize_t layers, n, img, s_need
    _chain_layer l[MAX_CHAIN]
    const float *x
    float *y
    int64_t *counter
    int64_t own_counter
    float *s[MAX_SETS]
    float *z[MAX_SETS]
    float *m[2][MAX_SETS]


cdef int _chain_task(void *ctx, Py_ssize_t t) noexcept nogil:
    """Images claimed one at a time, each carried through every layer: layer k writes the
    thread's buffer m[k % 2] (the last one y[n]), which layer k + 1 reads."""
    cdef _chain_job *j = <_chain_job *>ctx
    cdef Py_ssize_t n, k
    cdef const float *src
    cdef float *dst
    while True:
        n = <Py_ssize_t>lnn_claim(j.counter)
        if n >= j.n:
            return 0
        src = j.x + n * j.img
        for k in range(j.layers):
            dst = j.y + n * j.l[k].out if k == j.layers - 1 else j.m[k % 2][t]
            lnn_cw_or_direct(src, j.l[k].w, j.l[k].u, j.l[k].b, j.l[k].act, &j.l[k].g,
                             j.l[k].pp, j.s[t], j.z[t], dst)
            src = dst


cdef int _chain_setup(_chain_job *j, cnp.ndarray x, tuple layers, cnp.ndarray y) except -1:
    cdef Py_ssize_t k, ln = len(layers)
    cdef _chain_layer *L
    if ln < 1 or ln > MAX_CHAIN:
        raise ValueError(f"conv2d_direct_chain takes 1 to {MAX_CHAIN} layers, not {ln}")
    for a in (x, y):
        if cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT32:
            raise TypeError(f"conv2d_direct_chain takes float32 arrays, not {a.dtype}")
    j.layers, j.n = ln, cnp.PyArray_DIMS(x)[0]
    j.x, j.y = <const float *>cnp.PyArray_DATA(x), <float *>cnp.PyArray_DATA(y)
    j.img = cnp.PyArray_SIZE(x) // j.n if j.n else 0
    j.s_need = 0
    for k in range(ln):
        wp, b, act, geom, oh, ow, pool, c, h, w, o = layers[k][:11]
        u = layers[k][11] if len(layers[k]) > 11 else None
        L = &j.l[k]
        if cnp.PyArray_TYPE(<cnp.ndarray?>wp) != cnp.NPY_FLOAT32 or (
                b is not None and cnp.PyArray_TYPE(<cnp.ndarray?>b) != cnp.NPY_FLOAT32):
            raise TypeError(f"conv2d_direct_chain: layer {k}'s weights are not float32")
        L.w, L.b, L.act = <const float *>cnp.PyArray_DATA(<cnp.ndarray?>wp), <float *>_opt(b), act
        L.g.n, L.g.c, L.g.h, L.g.w, L.g.o = j.n, c, h, w, o
        L.g.kh, L.g.kw, L.g.sh, L.g.sw, L.g.ph, L.g.pw, L.g.dh, L.g.dw = geom
        L.g.oh, L.g.ow, L.g.step = oh, ow, 1
        L.pp = NULL
        L.out = o * oh * ow
        if pool is not None:
            _pool(L.pool, pool)
            L.pp = L.pool
            L.out = o * L.pool[6] * L.pool[7]
        L.u = NULL
        if u is not None and lnn_cw_fits(&L.g, L.pp, act):
            if (cnp.PyArray_TYPE(<cnp.ndarray?>u) != cnp.NPY_FLOAT32
                    or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>u)
                    or cnp.PyArray_SIZE(u) != (o + 3) // 4 * 16 * c * 4):
                raise ValueError(f"conv2d_direct_chain: layer {k}'s Winograd filters are not "
                                 f"float32 ({(o + 3) // 4}, 16, {c}, 4)")
            L.u = <const float *>cnp.PyArray_DATA(<cnp.ndarray>u)
            j.s_need = max(j.s_need, lnn_cw_scratch(&L.g, L.pp))
    return 0


cdef int _chain_scratch_ok(_chain_job *j, cnp.ndarray s) except -1:
    if cnp.PyArray_SIZE(s) < j.s_need or cnp.PyArray_TYPE(s) != cnp.NPY_FLOAT32:
        raise ValueError(f"conv2d_direct_chain: s holds {cnp.PyArray_SIZE(s)} floats, the "
                         f"Winograd layers need {j.s_need}")
    return 0


def conv2d_direct_chain(cnp.ndarray x not None, tuple layers not None,
                        cnp.ndarray counter not None, cnp.ndarray s not None,
                        cnp.ndarray z not None, cnp.ndarray m0 not None,
                        cnp.ndarray m1 not None, cnp.ndarray y not None):
    """For each image n (claimed from counter): h = x[n], then for each layer
    (wp, b, act, geom, oh, ow, pool, C, H, W, O[, u]): h = conv2d_direct_forward of h (C, H, W)
    -> (O, out), or its Winograd F(2x2, 3x3) form with u = conv2d_winograd_pack(w2, C) where
    the layer fits (3x3, stride 1, 2x2 / 2 pool, identity or ReLU; conv_winograd.h);
    y[n] = h. s, z: scratch for the largest layer; m0, m1: one image's output of
    the layers between (k even: m0, odd: m1). float32. Returns y."""
    cdef _chain_job j
    _chain_setup(&j, x, layers, y)
    _chain_scratch_ok(&j, s)
    j.counter = <int64_t *>cnp.PyArray_DATA(counter)
    j.s[0], j.z[0] = <float *>cnp.PyArray_DATA(s), <float *>cnp.PyArray_DATA(z)
    j.m[0][0], j.m[1][0] = <float *>cnp.PyArray_DATA(m0), <float *>cnp.PyArray_DATA(m1)
    with nogil:
        _chain_task(&j, 0)
    return y


def conv_direct_chain_threads(cnp.ndarray x not None, tuple layers not None,
                              tuple scratch not None, cnp.ndarray y not None, int threads):
    """conv2d_direct_chain on ``len(scratch)`` tasks of the shared pool (scratch[t] = (s, z,
    m0, m1), that task's), at most ``threads`` at once, with one fresh counter: each image is
    written by the one task that claimed it, so the result does not depend on the split.
    Returns y."""
    cdef _chain_job j
    cdef Py_ssize_t sets = len(scratch), t
    if sets < 1 or sets > MAX_SETS:
        raise ValueError(f"conv_direct_chain_threads takes 1 to {MAX_SETS} scratch sets")
    _chain_setup(&j, x, layers, y)
    j.own_counter = 0
    j.counter = &j.own_counter
    for t in range(sets):
        mine = scratch[t]
        if len(mine) != 4:
            raise ValueError(f"conv_direct_chain_threads: scratch set {t} has {len(mine)} arrays")
        _chain_scratch_ok(&j, mine[0])
        j.s[t] = <float *>cnp.PyArray_DATA(<cnp.ndarray?>mine[0])
        j.z[t] = <float *>cnp.PyArray_DATA(<cnp.ndarray?>mine[1])
        j.m[0][t] = <float *>cnp.PyArray_DATA(<cnp.ndarray?>mine[2])
        j.m[1][t] = <float *>cnp.PyArray_DATA(<cnp.ndarray?>mine[3])
    with nogil:
        lnn_parallel(_chain_task, &j, sets, threads)
    return y
