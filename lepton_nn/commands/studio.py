"""``lepton-nn studio [MODEL.lnn] [--data CSV] [--demo] [--port P]``: the browser studio on
127.0.0.1.

``--demo`` trains a small network on the bundled breast-cancer data (30 numeric columns,
standardized) so a newcomer sees it move; ``MODEL.lnn`` (any file ``lepton_nn.save`` writes)
is shown through the runtime alone, without layers or training code: its steps' graph, their
weights, and every step's output on the first rows of ``--data`` (raw rows for a tabular
file, numeric columns otherwise; zeros without it). Runs until Ctrl-C.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import LeptonError
from . import args as A


def demo_data() -> tuple[np.ndarray, np.ndarray]:
    """The bundled breast-cancer rows, standardized, and 1.0 for malignant."""
    from ..datasets import load_breast_cancer

    t = load_breast_cancer()
    x = t.to_numpy().astype(np.float32)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    y = (np.asarray(t.target) == "malignant").astype(np.float32)[:, None]
    return x, y


def demo_model(n_in: int):
    from ..nn import Dense, Sequential

    return Sequential(
        [Dense(16, "relu", name="hidden1"), Dense(8, "relu", name="hidden2"), Dense(1, name="out")]
    ).build((None, n_in))


def _rows(rm, path: str | None) -> np.ndarray | None:
    """The network input of the CSV's rows (a tabular file's preprocessing applied)."""
    if path is None:
        return None
    from ..data.csv_reader import read_csv

    table = read_csv(path)
    if rm.kind == "tabular":
        return rm.transform(table)
    return np.ascontiguousarray(table.to_numpy(), dtype=np.float32)


def cmd_studio(args) -> int:
    from ..inspect.studio import studio

    if args.port > 65535:
        raise LeptonError(f"--port must be at most 65535, got {args.port}")
    if args.demo == bool(args.model):
        raise LeptonError("give a model file or --demo (one of them)")
    if args.demo:
        x, y = demo_data()
        from ..datasets import load_breast_cancer

        names = load_breast_cancer().columns
        net = demo_model(x.shape[1])
        st = studio(net, (x, y), args.port, loss="bce", epochs=args.epochs, feature_names=names)
    else:
        from ..runtime import load

        rm = load(args.model)
        st = studio(rm, _rows(rm, args.data), args.port)
    try:  # a Ctrl-C right after the line still closes the studio (and its server process)
        print(f"studio at {st.url} (Ctrl-C to stop)", flush=True)
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        st.close()
    return 0


def add_parser(sub, h) -> None:
    s = sub.add_parser(
        "studio",
        help="a local web page showing a network's graph, training and backprop",
        formatter_class=h,
        description="Serves the studio on 127.0.0.1 (needs the 'serve' extra).",
    )
    s.add_argument("model", nargs="?", help="network file (.lnn)")
    s.add_argument("--data", help="CSV whose first rows the page runs the network on")
    s.add_argument("--demo", action="store_true", help="train a small network on bundled data")
    s.add_argument("--epochs", type=A.positive_int, default=200, help="epochs of the demo")
    s.add_argument("--port", type=A.int_at_least(0), default=0, help="port (0: a free one)")
    s.set_defaults(fn=cmd_studio)
