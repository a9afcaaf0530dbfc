"""``lepton-nn bench``: lepton_nn side by side with TensorFlow, PyTorch and ONNX Runtime.

Floor 8 (beside the CLI, imported only when the command runs); peers are imported only
inside their own adapter. How a run goes:

1. For each thread count, every engine starts in **its own worker process**
   (:mod:`~lepton_nn.bench.worker`: ``python -m lepton_nn.bench --worker ENGINE THREADS``)
   with ``OMP/OPENBLAS/MKL_NUM_THREADS`` set and the library's own thread API called, so no
   two engines share a thread pool.
2. For each workload, each case warms up (tracing, compilation, caches: excluded) and is
   calibrated to a round of about ``round_seconds``; then rounds are **interleaved** across
   engines (the order rotates every round) and repeated (:mod:`~lepton_nn.bench.runner`).
   The report gives medians with min-max.
3. Cold start (W7) runs each engine's script in fresh interpreters, interleaved, after the
   workers have exited; accuracy parity (ACC) trains in the workers.
4. A Markdown report, a JSON file with every raw round, and PNG bar charts (when matplotlib is
   installed) are written to ``--out`` (:mod:`~lepton_nn.bench.report`).
5. With training workloads, the machine's fp32 GEMM peak is measured at each thread count
   (:func:`~lepton_nn.bench.machine.gemm_peak`, before and after the workloads) and every
   training case gets its GFLOP/s (:func:`~lepton_nn.bench.workloads.training_flops`) and
   fraction of that peak. A workload whose rounds saw a 1-minute load average above
   ``--max-load`` (default 1) runs again (full mode: once) and the least loaded attempt is kept;
   each table states its load, and a table measured on a loaded machine (load above 1, or a
   GEMM peak per thread far below the run's best) is marked as such
   (:mod:`~lepton_nn.bench.loaded`).
6. At the start and end of each table the host's state is read (each CPU's speed on a fixed
   compiled loop, the cross-CPU cache-line round trip; ~10 ms) and printed beside it; a table
   whose CPUs ran unevenly, or whose round trip was in its slow mode, is marked "host uneven"
   (:mod:`~lepton_nn.bench.hoststate`, probe ``lepton_nn.kernels._hostprobe``).

A peer installed in its own virtual environment runs there: ``--python
tensorflow=/path/to/venv/bin/python`` starts that engine's worker (and its cold-start script)
with that interpreter; it needs NumPy and finds this lepton_nn on its ``PYTHONPATH``.

The files:

- ``workloads.py``: the workload specs (W1-W6, W8) and their seeded data and initial weights.
- ``cases.py``: :class:`Case`, which engine supports which workload, ``build_cases``, threads.
- ``engines/``: one adapter per engine (lepton_nn, hand-written NumPy, PyTorch,
  TensorFlow/Keras, ONNX Runtime) building its training, inference and matmul cases.
- ``coldstart.py`` (W7) and ``parity.py`` (ACC).
- ``worker.py``: the worker process and the parent's handle on it; ``runner.py``: the run.
- ``machine.py``: what the report says about the machine and versions.
- ``options.py``: the command's options; ``command.py``: its entry, ``main``.
- ``targets.py``, ``report.py``, ``charts.py``: the issue's targets, the report, the charts;
  ``loaded.py``: which tables were measured on a loaded machine; ``hoststate.py``: the
  host's state beside each table.
"""
