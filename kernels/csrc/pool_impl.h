/* pool_impl.h: the pool's definition (included by kernels/pool.pyx only; see pool.h). */
#define LNN_POOL_IMPL 1
#include "pool.h"
