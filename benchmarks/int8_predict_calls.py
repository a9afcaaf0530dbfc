"""N calls of the int8 784-512-256-10 MLP at batch 1, for counting instructions with callgrind
(load-proof): ``predict`` through the runtime, or its plan's compiled call alone. The cost of
one call is the difference of two runs over the difference of their N::

    for n in 1000 3000; do PYTHONPATH=. valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/int8_predict_calls.py predict $n 2>&1 | grep Collected; done

(``chain`` instead of ``predict``: the compiled call alone; predict's Python is the
difference. Run it in another checkout, with its own PYTHONPATH, for an A/B.)
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np


def main(argv: list[str]) -> None:
    what, n = argv[0], int(argv[1])
    threads = int(argv[2]) if len(argv) > 2 else 1
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_runtime as br

    import lepton_nn.runtime as rt

    with tempfile.TemporaryDirectory() as tmp:
        model = rt.load(br._files(br.make_weights(), tmp)["int8"], threads=threads)
    x = np.random.default_rng(1).standard_normal((1, br.SIZES[0])).astype(np.float32)
    fn, args, _ = model.plan_for(1).head[0]
    call = {"predict": lambda: model.predict(x), "chain": lambda: fn(x, *args)}[what]
    call()
    for _ in range(n):
        call()


if __name__ == "__main__":
    main(sys.argv[1:])
