"""Which tables of a benchmark run were measured on a loaded machine, so that the report can
say so beside each of them (and ``results.json`` under ``load_check``): a reader must never
take a loaded figure for a quiet one.

A table (one workload at one thread count) is *loaded* on either sign:

- **load**: other processes used more than :data:`QUIET_FOREIGN` CPUs while its rounds ran
  (the machine's busy time less the benchmark's own, ``machine.cpu_seconds``; the attempt
  kept, see ``runner._run_workload_load_checked``). Where that cannot be read, the 1-minute
  load average before or after the rounds above :data:`QUIET_LOAD` (it counts the
  benchmark's own threads too: a 2-thread table alone drives it towards 2);
- **GEMM peak**: a fp32 GEMM peak measured around its phase's workloads (before and after
  them, ``machine.gemm_peak``), per thread, is below :data:`PEAK_COLLAPSE` of the run's best
  per thread (max over every phase and measurement of ``best / threads``). Two threads on two
  quiet cores give ~1.7-1.9x one thread's GEMM; a neighbour on one core leaves ~1x (ratio
  ~0.55), and a peak measured after the workloads that fell below the one before says the
  machine got busy while they ran. The measurement does not say which workload of the phase
  was hit, so every table of the phase is marked.
"""

from __future__ import annotations

QUIET_FOREIGN = 0.25  # CPUs other processes used during a table's rounds: above, loaded
QUIET_LOAD = 1.0  # without /proc: 1-minute load average above which a table is loaded
PEAK_COLLAPSE = 0.6  # per-thread GEMM peak below this share of the run's best: marked loaded


def _peaks(phase: dict) -> list[dict]:
    """The phase's GEMM peak measurements that succeeded (``gemm_peaks``: before and after
    the workloads; older results keep only the better one, ``gemm_peak``)."""
    got = phase.get("gemm_peaks") or [phase.get("gemm_peak")]
    return [p for p in got if p and p.get("best")]


def peak_ratios(res: dict) -> dict[int, float]:
    """Per phase (by thread count): its lowest measured GEMM peak per thread over the run's
    best per thread; phases without a measurement are left out."""
    per_thread = {
        ph["threads"]: [p["best"] / max(1, ph["threads"]) for p in _peaks(ph)]
        for ph in res.get("phases", [])
    }
    best = max((v for vs in per_thread.values() for v in vs), default=0.0)
    return {t: min(vs) / best for t, vs in per_thread.items() if vs and best > 0}


def table_load(cases: list[dict]) -> float | None:
    """The 1-minute load average a table's rounds ran under: the larger of the readings
    before and after them (None when the OS gives none)."""
    ld = next((c["load"] for c in cases if c.get("load")), None)
    readings = [r[0] for r in (ld or {}).values() if isinstance(r, list) and r]
    return max(readings) if readings else None


def table_foreign(cases: list[dict]) -> float | None:
    """CPUs other processes used while a table's rounds ran (None when not measured)."""
    ld = next((c["load"] for c in cases if c.get("load")), None)
    return (ld or {}).get("foreign_cpus")


def _warning(wl: str, threads: int, load: float | None, ratio: float | None,
             foreign: float | None = None) -> dict | None:  # fmt: skip
    reasons = []
    if foreign is not None:
        if foreign > QUIET_FOREIGN:
            reasons.append(
                f"other processes used {foreign:.2f} CPUs during its rounds "
                f"(> {QUIET_FOREIGN:g}; 1-minute load average {load})"
            )
    elif load is not None and load > QUIET_LOAD:
        reasons.append(f"1-minute load average {load:.2f} (> {QUIET_LOAD:g})")
    if ratio is not None and ratio < PEAK_COLLAPSE:
        reasons.append(
            f"fp32 GEMM peak per thread measured around these rounds at {100 * ratio:.0f} % "
            f"of the run's best (< {100 * PEAK_COLLAPSE:.0f} %)"
        )
    if not reasons:
        return None
    return {"workload": wl, "threads": threads, "load": load, "foreign_cpus": foreign,
            "peak_ratio": ratio, "reasons": reasons}  # fmt: skip


def load_warnings(res: dict) -> list[dict]:
    """One entry per loaded table: ``workload``, ``threads``, ``load`` (1-minute, or None),
    ``peak_ratio`` (the phase's, or None) and ``reasons`` (readable, for the report). The
    W7 cold start (after every phase, at the first thread count) is judged by its load."""
    ratios = peak_ratios(res)
    out = []
    for ph in res.get("phases", []):
        t = ph["threads"]
        for wl in dict.fromkeys(c["workload"] for c in ph.get("cases", [])):
            mine = [c for c in ph["cases"] if c["workload"] == wl]
            out.append(_warning(wl, t, table_load(mine), ratios.get(t), table_foreign(mine)))
    if res.get("coldstart"):
        cold = [{"load": res.get("coldstart_load")}]
        out.append(_warning("W7", res["options"]["threads"][0], table_load(cold), None,
                            table_foreign(cold)))  # fmt: skip
    return [w for w in out if w is not None]


def load_check(res: dict) -> dict:
    """What ``results.json`` records under ``load_check``: the thresholds, each phase's GEMM
    peak ratio and the loaded tables."""
    return {
        "quiet_foreign_cpus": QUIET_FOREIGN,
        "quiet_load": QUIET_LOAD,
        "peak_collapse": PEAK_COLLAPSE,
        "peak_ratio": [{"threads": t, "ratio": r} for t, r in peak_ratios(res).items()],
        "loaded": load_warnings(res),
    }


def warning_text(w: dict) -> str:
    """The line the report puts above a loaded table."""
    return (
        "> **Loaded machine: these are not quiet figures.** "
        + "; ".join(w["reasons"])
        + ". Compare ratios within this table only; rerun on a quiet machine for absolute "
        "numbers."
    )
