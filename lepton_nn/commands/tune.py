"""``lepton-nn tune``: grid or random search of the tabular network's hyperparameters, a line
per finished trial, and (``--out``) the best configuration trained and saved as ``train`` would.
"""

from __future__ import annotations

import functools
import shlex
import sys
import threading
import time
from concurrent.futures import Future
from typing import Any

import numpy as np

from ..errors import LeptonError
from .args import check_output, format_hidden, hidden_sizes, positive_line

DEFAULT_SCORING = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "r2"}
METRICS = {
    "binary": ["accuracy", "roc_auc", "log_loss"],
    "multiclass": ["accuracy", "f1_macro"],
    "regression": ["r2", "mae", "mse"],
}
# metrics each task can be ranked by (a bad --scoring is refused before the first trial)
SCORINGS = {
    "binary": ("accuracy", "f1", "ks", "log_loss", "pr_auc", "precision", "recall", "roc_auc"),
    "multiclass": ("accuracy", "f1_macro", "log_loss"),
    "regression": ("mae", "mse", "r2"),
}


def _value(name: str, text: str) -> Any:
    if name == "hidden":  # kept as text ("64x32"): the results table shows it as typed
        return format_hidden(hidden_sizes(text))
    v = (int if name in ("batch_size", "epochs") else float)(text)
    if name in ("batch_size", "epochs") and v < 1:
        raise ValueError(text)
    if name in ("lr",) and not v > 0:
        raise ValueError(text)
    if name in ("dropout",) and not 0 <= v < 1:
        raise ValueError(text)
    if name in ("weight_decay",) and not v >= 0:
        raise ValueError(text)
    return v


TUNABLE = ("lr", "weight_decay", "dropout", "hidden", "batch_size", "epochs")
# what a trial trains with where the search leaves a parameter alone: every trial runs all
# its epochs on its fold's training rows (no early stopping), seeded by --seed
TRIAL_DEFAULTS = {
    "lr": 3e-3,
    "weight_decay": 1e-3,
    "dropout": 0.2,
    "hidden": "32x16",
    "batch_size": 64,
    "epochs": 30,
}


def parse_grid(text: str) -> dict[str, list]:
    """``"lr=1e-3,3e-3;hidden=32,64x32;dropout=0,0.2"`` -> {"lr": [...], "hidden": [...]}.

    Entries are separated by ``;``, values by ``,``; hidden sizes are written as in
    ``train --hidden`` (``64x32``).
    """
    grid: dict[str, list] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, values = part.partition("=")
        name = name.strip().replace("-", "_")
        if name not in TUNABLE or not values:
            raise LeptonError(f"--grid: unknown or empty entry {part!r}; tunable: {TUNABLE}")
        try:
            grid[name] = [_value(name, v.strip()) for v in values.split(",") if v.strip()]
        except Exception:
            raise LeptonError(f"--grid: bad value in {part!r}") from None
    return grid


def tune_trainer(
    n_in: int,
    n_out: int,
    task: str,
    hidden: str | tuple[int, ...] = TRIAL_DEFAULTS["hidden"],
    dropout: float = TRIAL_DEFAULTS["dropout"],
    lr: float = TRIAL_DEFAULTS["lr"],
    weight_decay: float = TRIAL_DEFAULTS["weight_decay"],
):
    """``build_fn`` of the search (module level, so process pools can pickle it)."""
    from .. import losses, optim
    from ..tabular import build_mlp
    from ..train import Trainer

    sizes = hidden_sizes(hidden) if isinstance(hidden, str) else tuple(hidden)
    net = build_mlp(n_in, n_out, sizes, dropout)
    opt = optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    loss = {
        "binary": losses.binary_cross_entropy_with_logits,
        "multiclass": losses.cross_entropy,
        "regression": losses.mse,
    }[task]
    return Trainer(net, loss, opt)


def _describe(params: dict) -> str:
    return " ".join(
        f"{k}={format_hidden(v) if k == 'hidden' else f'{v:.3g}' if isinstance(v, float) else v}"
        for k, v in params.items()
    )


class ProgressExecutor:
    """Runs the search's (trial, fold) tasks inline or on ``pool`` and prints one line per
    finished trial (all its folds done) with its mean score."""

    def __init__(self, pool, configs, folds, scoring, out=sys.stdout):
        self.pool, self.configs, self.folds, self.scoring = pool, configs, folds, scoring
        self.out, self.n, self.t0 = out, 0, time.perf_counter()
        self.done: dict[int, list] = {}
        self.lock = threading.Lock()
        self.finished = 0

    def rung(self, k: int, epochs: int, configs: list) -> None:
        """Successive halving starts rung ``k``: its trials are ``configs``."""
        print(f"rung {k}: {len(configs)} configurations x {epochs} epochs", file=self.out)
        self.configs, self.n, self.done, self.finished = configs, 0, {}, 0

    def share(self, obj):
        """The pool's data handle (e.g. scattered once to Dask workers), else ``obj``."""
        hook = getattr(self.pool, "share", None)
        return obj if hook is None else hook(obj)

    def submit(self, fn, *args):
        task = self.n
        self.n += 1
        if self.pool is None:
            fut: Future = Future()
            try:
                fut.set_result(fn(*args))
            except Exception as e:  # reported by the search with the trial's label
                fut.set_exception(e)
        else:
            fut = self.pool.submit(fn, *args)
        # The search waits on ``outer``, resolved only after the progress line is printed: a
        # pool runs done-callbacks on its own thread after waking the waiters, so a line
        # printed from the pool's future could come after the search (and main) returned.
        outer: Future = Future()
        fut.add_done_callback(lambda f, t=task: self._finished(t, f, outer))
        return outer

    def _finished(self, task: int, fut: Future, outer: Future) -> None:
        if fut.cancelled():
            outer.cancel()
            return
        try:
            self._report(task, fut)
        finally:
            if fut.exception() is not None:
                outer.set_exception(fut.exception())
            else:
                outer.set_result(fut.result())

    def _report(self, task: int, fut: Future) -> None:
        if fut.exception() is not None:
            return
        trial = task // self.folds
        with self.lock:
            got = self.done.setdefault(trial, [])
            got.append(fut.result()["scores"].get(self.scoring, float("nan")))
            if len(got) < self.folds:
                return
            self.finished += 1
            print(
                f"trial {self.finished}/{len(self.configs)} ({time.perf_counter() - self.t0:.1f}"
                f" s): {_describe(self.configs[trial])}  {self.scoring} "
                f"{float(np.mean(got)):.4f}",
                file=self.out,
                flush=True,
            )


def cmd_tune(args) -> int:
    from ..data import Preprocessor, read_csv
    from ..tabular import _infer_task
    from ..tuning import GridSearch, RandomSearch, choice, loguniform, uniform
    from ..tuning.validation import default_executor

    check_output(args.out, "--out")
    grid = parse_grid(args.grid) if args.grid else None
    table = read_csv(args.data, target=args.target)
    task = _infer_task(np.asarray(table.target))
    scoring = args.scoring or DEFAULT_SCORING[task]
    if scoring not in SCORINGS[task]:
        raise LeptonError(
            f"--scoring {scoring!r} does not rank a {task} target; use one of {SCORINGS[task]}"
        )
    if task == "regression" and args.positive is not None:
        raise LeptonError(f"--positive: the target {args.target!r} is numeric (regression)")
    pre = Preprocessor(missing_indicator=True)
    X, y_raw = pre.fit_resample(table, table.target)
    if task == "regression":
        t = y_raw.astype(np.float64)
        y = ((t - t.mean()) / (t.std() or 1.0)).astype(np.float32).reshape(-1, 1)
        n_out = 1
    else:
        from ..data import LabelEncoder

        labels = LabelEncoder(positive=args.positive if task == "binary" else None).fit(y_raw)
        y = labels.transform(y_raw)
        n_out = 1 if task == "binary" else len(labels.classes_)
        if n_out == 1:
            y = y.astype(np.float32).reshape(-1, 1)
            print(positive_line(labels, args.positive, y_raw))
    build = functools.partial(tune_trainer, n_in=X.shape[1], n_out=n_out, task=task)
    kw = {
        "cv": args.cv,
        "seed": args.seed,
        "scoring": scoring,
        "metrics": METRICS[task],
        "stratified": task != "regression",
        "fit_kwargs": {k: TRIAL_DEFAULTS[k] for k in ("epochs", "batch_size")},
        "refit": False,
    }
    if args.trials:
        space = {
            "lr": _Rounded(loguniform(1e-4, 1e-2)),
            "hidden": choice(["16", "32", "32x16", "64x32"]),
            "dropout": _Rounded(uniform(0.0, 0.5)),
            "weight_decay": _Rounded(loguniform(1e-5, 1e-2)),
            "batch_size": choice([32, 64, 128]),
        }
        search = RandomSearch(build, space, n_trials=args.trials, **kw)
    else:
        grid = grid or {"lr": [1e-3, 3e-3], "hidden": ["32x16", "64x32"], "dropout": [0.0, 0.2]}
        search = GridSearch(build, grid, **kw)
    configs = search.configurations()
    n_tasks = len(configs) * args.cv
    if args.dask or args.ray:  # a cluster: lepton_nn.distributed, floor 8, loaded only here
        from ..distributed import connect

        pool = connect(dask=args.dask, ray=args.ray)
        where = f"on {'Dask ' + args.dask if args.dask else 'Ray ' + args.ray}"
        print(f"{len(configs)} configurations x {args.cv} folds {where}", flush=True)
    else:
        pool = None if args.jobs == 1 else default_executor(n_tasks, args.jobs)
    out = sys.stdout if args.verbose else _Null()
    search.executor = ProgressExecutor(pool, configs, args.cv, scoring, out)
    t0 = time.perf_counter()
    if args.halving:
        return _halving(args, search, X, y, table, pool, t0)
    try:
        search.fit(X, y)
    finally:
        if pool is not None:
            pool.shutdown()
    epochs = "/".join(str(e) for e in grid.get("epochs", [])) if grid else ""
    print(
        f"{len(search.results_)} configurations x {args.cv} folds "
        f"({time.perf_counter() - t0:.1f} s; {epochs or TRIAL_DEFAULTS['epochs']} epochs each, "
        "no early stopping; preprocessing statistics from all rows, labels unused):"
    )
    print(search.table(top=args.top))
    best = search.best_params_
    print(f"best: {_describe(best)}  {search.scoring_} {search.best_score_:.4f}")
    print("the same in train: " + _train_flags(best, args))
    if args.out:
        _save_best(args, table, best)
    return 0


def _halving(args, search, X, y, table, pool, t0) -> int:
    """``--halving``: successive halving over 3, 9, 27, then a trial's epochs (30; the best
    third goes on), so the last rung trains as a grid trial does."""
    from ..tuning import SuccessiveHalving

    top = TRIAL_DEFAULTS["epochs"]
    sh = SuccessiveHalving(
        search, min_epochs=3, max_epochs=top, eta=3, on_rung=search.executor.rung
    )
    try:
        sh.fit(X, y)
    finally:
        if pool is not None:
            pool.shutdown()
    print(f"successive halving, {args.cv} folds ({time.perf_counter() - t0:.1f} s):")
    print(sh.summary())
    best = sh.best_params_
    print(f"best: {_describe(best)}  {sh.scoring_} {sh.best_score_:.4f}")
    print("the same in train: " + _train_flags(best, args))
    if args.out:
        _save_best(args, table, best)
    return 0


class _Rounded:
    """A distribution's draws to 3 significant digits: the trial trains with the value the
    table and the printed ``train`` flags show (0.00781, not 0.007797910969194024)."""

    def __init__(self, dist):
        self.dist = dist

    def __call__(self, gen) -> float:
        return float(f"{self.dist.sample(gen):.3g}")


def trial_params(best: dict) -> dict:
    """Every setting a trial of ``best`` trained with (searched, else TRIAL_DEFAULTS), as
    :class:`~lepton_nn.tabular.TabularModel` takes them; ``patience`` 0: no early stopping."""
    params = {**TRIAL_DEFAULTS, **best}
    params["hidden"] = format_hidden(params["hidden"])
    return {**params, "patience": 0}


def _train_flags(best: dict, args) -> str:
    """``train`` flags that train as the best trial did: every setting of
    :func:`trial_params` (floats in full, so they read back equal), the seed and --positive."""
    parts = []
    for k, v in trial_params(best).items():
        parts.append(f"--{k.replace('_', '-')} {repr(float(v)) if isinstance(v, float) else v}")
    parts.append(f"--seed {args.seed}")
    if args.positive is not None:
        parts.append(f"--positive {shlex.quote(str(args.positive))}")
    return " ".join(parts)


def _save_best(args, table, best: dict) -> None:
    """Train the best configuration as its trials did (``train`` with the printed flags:
    every epoch, no early stopping) on every row and save it with its preprocessing."""
    from .. import io
    from ..tabular import TabularModel

    kw = trial_params(best)
    kw["hidden"] = hidden_sizes(kw["hidden"])
    model = TabularModel(
        **kw,
        validation_split=0.0,
        positive=args.positive,
        seed=args.seed,
        verbose=args.verbose,
    )
    model.fit(table)
    model.metrics_card = {"tuning": {"best": {k: _plain(v) for k, v in best.items()}}}
    io.save(model, args.out)
    print(f"saved {args.out}: the best configuration trained on every row (as its trials were)")


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


class _Null:
    def write(self, s):
        return len(s)

    def flush(self):
        pass


def add_parser(sub, h) -> None:
    from .args import add_verbosity, cv_folds, nonneg_int, positive_int

    u = sub.add_parser(
        "tune",
        help="grid or random search of the network's hyperparameters",
        formatter_class=h,
        description="Cross-validates each configuration (--cv folds, stratified for classes); "
        f"a trial trains {TRIAL_DEFAULTS['epochs']} epochs (or the grid's) with no early "
        "stopping. Prints a line per trial, the ranked table, the best configuration and the "
        "'train' flags that train it as its trials did.",
    )
    u.add_argument("data", help="CSV file with a header row")
    u.add_argument("--target", required=True, help="target column")
    u.add_argument(
        "--positive",
        help="label of the positive class (two classes; default: the larger label, as train)",
    )
    u.add_argument(
        "--grid",
        help='e.g. "lr=1e-3,3e-3;hidden=32,64x32;dropout=0,0.2" (default: lr 1e-3,3e-3; '
        f"hidden 32x16,64x32; dropout 0,0.2); tunable: {', '.join(TUNABLE)}; the others "
        "take " + ", ".join(f"{k} {v}" for k, v in TRIAL_DEFAULTS.items()),
    )
    u.add_argument(
        "--trials",
        type=nonneg_int,
        default=0,
        help="random search with N trials instead (lr, weight_decay, dropout, hidden, batch_size)",
    )
    u.add_argument("--cv", type=cv_folds, default=5, help="folds per configuration")
    u.add_argument(
        "--scoring",
        help="metric to rank by (default roc_auc for two classes, accuracy for more, r2 for "
        "a numeric target)",
    )
    u.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        help="worker processes (1: no pool; default: one per core)",
    )
    u.add_argument(
        "--dask",
        metavar="ADDRESS|local:N",
        help="run the trials on a Dask cluster (tcp://host:8786) or on a local one of N worker "
        "processes (needs lepton-nn[distributed]); same results as a serial run",
    )
    u.add_argument(
        "--ray",
        metavar="auto|local|ADDRESS",
        help="run the trials on Ray (auto: the running cluster; local: start one here; needs ray)",
    )
    u.add_argument(
        "--halving",
        action="store_true",
        help="successive halving: every configuration 3 epochs, the best third 9, then 27, "
        f"then {TRIAL_DEFAULTS['epochs']}, a trial's epochs (a fraction of the grid's cost)",
    )
    u.add_argument("--top", type=positive_int, default=10, help="rows of the table to print")
    u.add_argument("--seed", type=nonneg_int, default=0, help="seed of the folds and trials")
    u.add_argument(
        "--out", help="train the best configuration on every row, as its trials, and save it here"
    )
    add_verbosity(u)
    u.set_defaults(fn=cmd_tune)
