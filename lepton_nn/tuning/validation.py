"""Cross-validation, and the machinery every search shares: folds, seeds, parallel trials.

``build_fn(**params) -> Trainer`` makes a fresh, untrained :class:`~lepton_nn.train.Trainer`
for one set of hyperparameters. Parameters named like a ``fit`` argument (``epochs``,
``batch_size``, ``class_weight``, ``shuffle``, ``validation_split``) or prefixed ``fit__``
(``fit__callbacks``) go to ``Trainer.fit`` instead of ``build_fn``; ``fit_kwargs`` holds the
``fit`` arguments shared by every trial (``verbose`` defaults to 0).

Each (trial, fold) is deterministic: its seed is drawn from ``(seed, trial index, fold)`` by
``numpy.random.SeedSequence``, set with ``lepton_nn.set_seed`` before ``build_fn`` runs and
passed to ``fit``. The result does not depend on where or in which order trials run.

Parallelism: trials run through any ``concurrent.futures.Executor``-like object (``submit``
returning a future with ``result()``). The default is a local ``ProcessPoolExecutor`` with one
worker per CPU, each limited to ``CPUs // workers`` BLAS threads; ``executor="serial"`` runs
inline. To spread trials over machines pass, e.g., a Dask executor
(``distributed.Client(...).get_executor()``) or any other Executor implementation such as a
Ray-backed one. Whatever runs in another process must be picklable: define ``build_fn`` (and
any custom loss, metric or callback) at module level in an importable module, not as a lambda
or a function inside ``if __name__ == "__main__":``. Avoid thread pools: threads share
lepton_nn's global random stream (weight init, dropout), so their trials are not repeatable.

Data shipping: every task names the whole ``(X, y)`` and its fold's row indices, so an
executor that offers ``share(obj) -> handle`` (e.g. :func:`lepton_nn.distributed.dask_executor`,
which scatters ``obj`` once to every worker) receives the data once per search, and each task
carries only the handle; other executors ship the data with every task.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

import numpy as np

from .._cpu import usable_cores
from ..backend.threads import check_threads
from ..data.split import KFold, StratifiedKFold
from ..errors import DataError, LeptonError
from ..random import get_seed, rng, set_seed
from ._threads import limit_threads

__all__ = ["cross_validate", "FIT_PARAMS", "DEFAULT_SCORING", "split_params", "trial_seed"]

FIT_PARAMS = frozenset({"epochs", "batch_size", "class_weight", "shuffle", "validation_split"})
DEFAULT_SCORING = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "mse"}


def split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(build_fn kwargs, fit kwargs)``: fit arguments by name or by the ``fit__`` prefix."""
    build, fit = {}, {}
    for k, v in params.items():
        if k.startswith("fit__"):
            fit[k[5:]] = v
        elif k in FIT_PARAMS:
            fit[k] = v
        else:
            build[k] = v
    return build, fit


def trial_seed(seed: int, trial: int, fold: int | None) -> int:
    """The seed of one trial on one fold (``fold=None``: the refit on all data)."""
    key = [int(seed), int(trial), 0 if fold is None else int(fold) + 1]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def greater_is_better(scoring: str) -> bool:
    """Direction of a score: metrics by their ``greater_is_better`` tag, ``loss`` down."""
    if scoring == "loss":
        return False
    from ..metrics import get_metric

    return bool(getattr(get_metric(scoring), "greater_is_better", True))


# -- folds -----------------------------------------------------------------------------------


def _class_like(y: np.ndarray) -> bool:
    """Whether ``y`` looks like class labels (so folds can be stratified)."""
    if y.ndim != 1:
        return False
    if y.dtype.kind in "biuUSO":
        return True
    if y.dtype.kind != "f" or not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
        return False
    return len(np.unique(y)) <= 100


def make_splits(
    X: np.ndarray, y: np.ndarray, cv: Any, stratified: bool, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train_idx, test_idx)`` pairs from an int (shuffled, seeded folds; stratified for
    class labels when asked), a splitter with ``split(X, y)``, or an iterable of pairs."""
    if isinstance(cv, (int, np.integer)) and not isinstance(cv, bool):
        cls = StratifiedKFold if stratified and _class_like(y) else KFold
        splitter = cls(int(cv), shuffle=True, seed=seed)
        pairs = splitter.split(X, y)
    elif hasattr(cv, "split"):
        pairs = cv.split(X, y)
    elif isinstance(cv, Iterable):
        pairs = cv
    else:
        raise TypeError(f"cv must be an int, a splitter or (train, test) pairs, got {cv!r}")
    out = [(np.asarray(tr, dtype=np.intp), np.asarray(te, dtype=np.intp)) for tr, te in pairs]
    if not out:
        raise DataError("cross-validation produced no folds")
    return out


# -- one trial on one fold -------------------------------------------------------------------


def fit_and_score(
    build_fn: Callable[..., Any],
    build_params: dict[str, Any],
    fit_params: dict[str, Any],
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    metrics: Sequence[str] | None,
    scoring: str | None,
    seed: int,
) -> dict[str, Any]:
    """Build, train and score one configuration on one fold (runs in a worker).

    Returns ``{"scores": {"loss": ..., metric: ...}, "scoring": name, "fit_time": seconds,
    "epochs": epochs run, "stop_reason": None or text}``.
    """
    from ..train import Trainer

    set_seed(seed)
    trainer = build_fn(**build_params)
    if not isinstance(trainer, Trainer):
        raise TypeError(
            f"build_fn must return a lepton_nn.train.Trainer, got {type(trainer).__name__}"
        )
    if scoring is None:
        scoring = DEFAULT_SCORING[trainer.task]
    names = list(trainer.metric_names if metrics is None else metrics)
    if scoring != "loss" and scoring not in names:
        names.append(scoring)
    kwargs = {"verbose": 0, **fit_params, "seed": seed}
    t0 = time.perf_counter()
    history = trainer.fit(X_train, y_train, **kwargs)
    fit_time = time.perf_counter() - t0
    scores = trainer.evaluate(X_test, y_test, metrics=names)
    return {
        "scores": scores,
        "scoring": scoring,
        "fit_time": fit_time,
        "epochs": len(history.epoch),
        "stop_reason": history.stop_reason,
    }


def fit_and_score_fold(
    build_fn: Callable[..., Any],
    build_params: dict[str, Any],
    fit_params: dict[str, Any],
    data: tuple[np.ndarray, np.ndarray],
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    metrics: Sequence[str] | None,
    scoring: str | None,
    seed: int,
) -> dict[str, Any]:
    """:func:`fit_and_score` on the rows ``train_idx`` / ``test_idx`` of ``data = (X, y)``
    (the fold is cut on the worker, so the whole data travels once, see :func:`share`)."""
    X, y = data
    return fit_and_score(
        build_fn,
        build_params,
        fit_params,
        X[train_idx],
        y[train_idx],
        X[test_idx],
        y[test_idx],
        metrics,
        scoring,
        seed,
    )


# -- running many -----------------------------------------------------------------------------


def default_executor(n_tasks: int, n_jobs: int | None = None) -> ProcessPoolExecutor | None:
    """A process pool sized for ``n_tasks`` with BLAS threads split between workers, or
    ``None`` when only one worker would run (then running inline is cheaper)."""
    cores = usable_cores()
    workers = min(check_threads(n_jobs, "n_jobs") or cores, n_tasks)
    if workers <= 1:
        return None
    threads = max(1, cores // workers)
    return ProcessPoolExecutor(max_workers=workers, initializer=limit_threads, initargs=(threads,))


def share(executor: Executor | str | None, obj: Any) -> Any:
    """What tasks receive in place of ``obj``: ``executor.share(obj)`` when the executor
    offers that hook (a handle the executor resolves to ``obj`` on its workers, sent there
    once), else ``obj`` itself (shipped with every task)."""
    hook = getattr(executor, "share", None)
    return obj if hook is None or isinstance(executor, str) else hook(obj)


def run_tasks(
    fn: Callable[..., Any],
    tasks: list[tuple],
    labels: list[str],
    executor: Executor | str | None = None,
    n_jobs: int | None = None,
) -> list[Any]:
    """``[fn(*t) for t in tasks]``, in order, inline or through an executor."""
    n_jobs = check_threads(n_jobs, "n_jobs")  # before any work, even when executor is given
    own = None
    if executor is None:
        own = executor = default_executor(len(tasks), n_jobs)
        if executor is None:
            executor = "serial"
    if isinstance(executor, str):
        if executor != "serial":
            raise ValueError(f"executor must be an Executor, None or 'serial', got {executor!r}")
        results = []
        state = rng().bit_generator.state, get_seed()  # trials reseed the global stream
        try:
            for t, label in zip(tasks, labels):
                try:
                    results.append(fn(*t))
                except Exception as e:
                    raise LeptonError(f"{label} failed: {e}") from e
        finally:
            set_seed(state[1])
            rng().bit_generator.state = state[0]
        return results
    if not hasattr(executor, "submit"):
        raise TypeError(f"executor needs a submit() method, got {type(executor).__name__}")
    try:
        futures = [executor.submit(fn, *t) for t in tasks]
        results = []
        for f, label in zip(futures, labels):
            try:
                results.append(f.result())
            except Exception as e:
                raise LeptonError(f"{label} failed: {e}") from e
        return results
    finally:
        if own is not None:
            own.shutdown(wait=True, cancel_futures=True)


def evaluate_configs(
    build_fn: Callable[..., Any],
    configs: list[dict[str, Any]],
    X: Any,
    y: Any,
    cv: Any = 5,
    fit_kwargs: Mapping[str, Any] | None = None,
    metrics: Sequence[str] | None = None,
    scoring: str | None = None,
    stratified: bool = True,
    seed: int = 0,
    executor: Executor | str | None = None,
    n_jobs: int | None = None,
    trial_ids: Sequence[int] | None = None,
) -> tuple[list[list[dict[str, Any]]], list[tuple[np.ndarray, np.ndarray]]]:
    """Cross-validate every configuration on the same folds; results[config][fold].
    ``trial_ids``: the trial number of each config (its seeds; default 0, 1, ...)."""
    X, y = np.asarray(X), np.asarray(y)
    if len(X) != len(y):
        raise DataError(f"X has {len(X)} rows but y has {len(y)}")
    splits = make_splits(X, y, cv, stratified, seed)
    data = share(executor, (X, y))  # before the tasks: once per search, not per trial
    tasks, labels = [], []
    ids = range(len(configs)) if trial_ids is None else [int(t) for t in trial_ids]
    for i, params in zip(ids, configs):
        build, fit = split_params(params)
        fit = {**(fit_kwargs or {}), **fit}
        for k, (tr, te) in enumerate(splits):
            # each task gets its own copy of the fit arguments (callbacks keep state)
            tasks.append(
                (
                    build_fn,
                    build,
                    copy.deepcopy(fit),
                    data,
                    tr,
                    te,
                    None if metrics is None else list(metrics),
                    scoring,
                    trial_seed(seed, i, k),
                )
            )
            labels.append(f"trial {i} {params} fold {k}")
    flat = run_tasks(fit_and_score_fold, tasks, labels, executor, n_jobs)
    k = len(splits)
    return [flat[i * k : (i + 1) * k] for i in range(len(configs))], splits


def summarize(fold_results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-fold rows, mean and (population, ddof=0) std of every score."""
    names = list(fold_results[0]["scores"])
    folds = []
    for k, r in enumerate(fold_results):
        folds.append({"fold": k, **r["scores"], "fit_time": r["fit_time"], "epochs": r["epochs"]})
    table = {n: np.array([r["scores"][n] for r in fold_results], dtype=np.float64) for n in names}
    return {
        "folds": folds,
        "mean": {n: float(np.mean(v)) for n, v in table.items()},
        "std": {n: float(np.std(v)) for n, v in table.items()},
        "fit_time": float(sum(r["fit_time"] for r in fold_results)),
        "scoring": fold_results[0]["scoring"],
        "stop_reasons": [r["stop_reason"] for r in fold_results if r["stop_reason"]],
    }


def cross_validate(
    build_fn: Callable[..., Any],
    X: Any,
    y: Any,
    cv: Any = 5,
    *,
    params: Mapping[str, Any] | None = None,
    fit_kwargs: Mapping[str, Any] | None = None,
    metrics: Sequence[str] | None = None,
    stratified: bool = True,
    seed: int = 0,
    executor: Executor | str | None = None,
    n_jobs: int | None = None,
) -> dict[str, Any]:
    """K-fold cross-validation of ``build_fn(**params)``; see the module docstring.

    Args:
        cv: number of folds (shuffled by ``seed``; stratified when ``stratified`` and ``y``
            holds class labels), a splitter with ``split(X, y)``, or ``(train, test)`` pairs.
        metrics: names scored on each test fold (default: the trainer's own metrics); the
            loss is always included.
        executor: ``None`` (a local process pool), ``"serial"``, or any Executor.
        n_jobs: workers of the default pool: an int >= 1, or None (one per CPU).

    Returns:
        ``{"folds": [{"fold", "loss", <metric>..., "fit_time", "epochs"}, ...],
        "mean": {name: value}, "std": {name: value}, "fit_time": total seconds,
        "scoring": the default score name for the task, "stop_reasons": [...]}``.
    """
    results, _ = evaluate_configs(
        build_fn,
        [dict(params or {})],
        X,
        y,
        cv,
        fit_kwargs,
        metrics,
        None,
        stratified,
        seed,
        executor,
        n_jobs,
    )
    return summarize(results[0])
