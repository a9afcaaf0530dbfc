"""One adapter per engine: how each runs the benchmark workloads.

Each module's ``BUILDERS`` maps a workload family (``mlp``: W1/W2 training, ``inference``:
W5, ``net``: W3/W4 training, ``net inference``: W8, ``matmul``: W6) to the function returning
that engine's cases (:class:`lepton_nn.bench.cases.Case`). Peer libraries (torch, tensorflow,
onnxruntime) are imported only inside those functions.
"""
