"""Worker processes: ``python -m lepton_nn.bench --worker ENGINE THREADS`` (started by
:class:`lepton_nn.bench.worker.Worker`); the command itself is ``lepton-nn bench``."""

import sys

from .worker import worker_main

if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2], int(sys.argv[3])))
    print("usage: lepton-nn bench [options] (this module runs workers only)", file=sys.stderr)
    sys.exit(2)
