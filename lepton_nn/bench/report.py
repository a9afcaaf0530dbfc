"""The report: ``report.md`` (machine, versions, targets, a table per workload and thread count,
cold start, parity, how each engine was used, fairness notes), ``results.json`` with every raw
round, the charts, and the console summary."""

from __future__ import annotations

import json
import os
import statistics

from . import hoststate
from .charts import write_charts
from .loaded import PEAK_COLLAPSE, QUIET_FOREIGN, load_check, load_warnings, warning_text
from .options import WORKLOAD_TITLES, timed_workloads
from .targets import case_label, case_rate, fmt_rate, fmt_value, our_case, target_rows
from .worker import json_default


def render_markdown(res: dict) -> str:
    """The Markdown report of a run's results."""
    m, o = res["machine"], res["options"]
    loaded = {(w["workload"], w["threads"]): w for w in load_warnings(res)}
    uneven = _uneven(res)
    L = ["# lepton_nn benchmark report", ""]
    L.append(
        f"Generated {res['date']} by `{res['command'].strip()}`"
        f"{' (quick mode)' if o['quick'] else ''}: {o['rounds']} timed rounds of about "
        f"{o['round_seconds']} s per case after an excluded warm-up, interleaved across "
        f"engines; medians with min-max over rounds. Total {res.get('seconds', 0):.0f} s."
    )
    L += ["", _loaded_summary(res, loaded)]
    L += ["", _host_summary(res, uneven)]
    L += ["", "## Machine", ""]
    L.append(
        f"- CPU: {m['cpu']}, {m['logical_cpus']} logical CPUs; ISA: "
        f"{' '.join(m['isa']) or 'unknown'}"
    )
    L.append(f"- Platform: {m['platform']}")
    L.append(
        f"- Threads per engine: {', '.join(str(t) for t in o['threads'])} (every engine "
        "pinned to the same count: environment + threadpoolctl + torch.set_num_threads + "
        "TF intra/inter-op + ONNX Runtime session options)"
    )
    for b in m["blas"]:
        L.append(
            f"- NumPy BLAS: {b.get('internal_api')} {b.get('version', '')}, kernel "
            f"{b.get('architecture', '?')}, {b.get('threading_layer', '?')} threading"
        )
    L.append(
        f"- Load average (1/5/15 min) before: {res.get('load_before')}, after: "
        f"{res.get('load_after')}"
    )
    for ph in res["phases"]:
        pk = ph.get("gemm_peak")
        if pk and "best" in pk:
            each = [p.get("best") for p in ph.get("gemm_peaks") or []]
            each = ", ".join(f"{b:.1f}" if b else "failed" for b in each)
            L.append(
                f"- fp32 GEMM peak, {ph['threads']} thread(s): **{pk['best']:.1f} GFLOP/s** "
                f"(median {pk['median']:.1f}, min {pk['min']:.1f}; {pk['how']}, measured "
                f"before and after the workloads{f' ({each})' if each else ''}, the better "
                "kept); the training tables give each case's GFLOP/s as a fraction of it"
            )
        elif pk:
            L.append(f"- fp32 GEMM peak, {ph['threads']} thread(s): failed ({pk.get('error')})")
    L.append(
        f"- Load limit: a workload during whose rounds other processes used more than "
        f"{QUIET_FOREIGN:g} CPUs (the machine's busy time less this benchmark's; without "
        f"/proc: a 1-minute load average above {o.get('max_load', 1.0):g}) is run again (up to "
        f"{o.get('reruns', 0)} more time(s)) and the least loaded attempt kept; each table "
        "states the load it ran under"
    )
    env = m.get("environment") or {}
    L.append(
        "- Environment variables of note: "
        + (", ".join(f"`{k}={v}`" for k, v in env.items()) or "none set")
    )
    L += ["", "## Versions", ""]
    vers = {"python": m["python"], "numpy": m["numpy"], "lepton_nn": m["lepton_nn"]}
    for ph in res["phases"]:
        for hello in ph["workers"].values():
            vers.update(hello.get("versions", {}))
    L.append(
        ", ".join(f"{k} {v}" for k, v in vers.items())
        + f"; lepton_nn backends available: {', '.join(m['backends_available'])}"
    )
    for e, why in res.get("skipped_engines", {}).items():
        L.append(f"- {e}: skipped ({why})")

    rows = target_rows(res)
    if rows:
        L += [
            "",
            "## Targets (ratios measured in this run)",
            "",
            "| workload | threads | lepton_nn | peer | peer value | ratio | target | met |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            met = ("yes" if r["met"] else "NO") + (" (loaded)" if _row_loaded(r, loaded) else "")
            met += " (host uneven)" if _row_loaded(r, uneven) else ""
            if r["ratio"] is None:
                unit = r.get("unit", "")
                L.append(
                    f"| {r['workload']} | {r['threads']} | {r['ours']:.3g} {unit} | "
                    f"{r['peer']} | | | {r['target']} | {met} |"
                )
            else:
                u = r.get("rate_unit", "samples/s")
                L.append(
                    f"| {r['workload']} | {r['threads']} | {fmt_value(r['ours'], u)} "
                    f"({r.get('ours_variant', '')}) | {r['peer']} | {fmt_value(r['theirs'], u)} "
                    f"| {r['ratio']:.2f}x | >= {r['target']}x | {met} |"
                )

    backend = o["backends"][0]
    for wl in timed_workloads(o["workloads"]):
        for ph in res["phases"]:
            cases = [c for c in ph["cases"] if c["workload"] == wl]
            if not cases:
                continue
            L += ["", f"## {WORKLOAD_TITLES.get(wl, wl)} — {ph['threads']} thread(s)", ""]
            if (wl, ph["threads"]) in loaded:
                L += [warning_text(loaded[wl, ph["threads"]]), ""]
            if (wl, ph["threads"]) in uneven:
                L += [hoststate.warning_text(uneven[wl, ph["threads"]]), ""]
            L += _case_table(cases, our_case(cases, backend), ph.get("gemm_peak"))
            L += _load_line(cases)
            L += hoststate.host_line(cases)
            sums = {c["checksum"] for c in cases if "checksum" in c}
            procs = len({c["worker"] for c in cases if "worker" in c})
            L += [
                "",
                f"Data and initial weights: checksum {', '.join(sorted(sums))} in all "
                f"{procs} processes" + (" (identical)." if len(sums) == 1 else " (DIFFER)."),
            ]
    if res.get("coldstart"):
        L += ["", "## W7 cold start (fresh process: import + load + first prediction)", ""]
        w7 = loaded.get(("W7", o["threads"][0]))
        L += [warning_text(w7), ""] if w7 else []
        L += _cold_table(res["coldstart"])
    if res.get("parity"):
        L += ["", "## Accuracy parity (test set)", ""]
        L += _parity_table(res["parity"])
    L += ["", "## How each engine was used", ""]
    hows: dict[tuple, list[str]] = {}  # (engine, variant, how) -> workloads, in order
    for ph in res["phases"]:
        for c in ph["cases"]:
            if "how" in c:
                wls = hows.setdefault((c.get("engine"), c.get("variant"), c["how"]), [])
                wl = str(c["workload"])[:2]  # W5b1 -> W5, W6m64 -> W6
                if wl not in wls:
                    wls.append(wl)
    n_hows: dict[tuple, int] = {}
    for e, v, _how in hows:
        n_hows[(e, v)] = n_hows.get((e, v), 0) + 1
    for (e, v, how), wls in hows.items():
        where = f" ({', '.join(wls)})" if n_hows[(e, v)] > 1 else ""
        L.append(f"- **{e} · {v}**{where}: {how}")
    for e, c in (res.get("coldstart") or {}).items():
        if c.get("how"):
            L.append(f"- **W7 {e}**: {c['how']}")
    L += [
        "",
        "## Fairness notes",
        "",
        "- Every engine runs in its own process; rounds are interleaved (the order rotates "
        "each round) with a short idle gap, so a busy neighbour hits all engines alike.",
        "- Data and initial weights come from one seeded function; the checksum column of the "
        "JSON shows they are bit-identical in every process. float32 everywhere; Adam lr 1e-3, "
        "betas (0.9, 0.999), eps 1e-8 in every engine.",
        "- Warm-up (tracing, JIT compilation, first-touch allocations) is excluded; Keras "
        "`fit` rounds include fit's own per-call set-up, as a user's epoch does.",
        "- W3/W4: the same function in every engine (initial weights converted to each "
        "layout and checked to give the same logits); TensorFlow runs the CNN channels_last "
        "(NHWC), the layout it recommends on CPU, lepton_nn and PyTorch NCHW.",
        "- W6: one (1024, 1024) weight quantized once (symmetric int8 per output channel) and "
        "shared; `qgemm_s32` and `MatMulInteger` both map uint8 x int8 -> int32; `qlinear` "
        "(what the targets compare with MatMulInteger) does that GEMM plus dequantization and "
        "bias in the same call; the dynamic int8 Dense and PyTorch dynamic quantization both "
        "take float32 in and give float32 out; float32 NumPy is the unquantized baseline.",
        "- W8: ONNX Runtime runs the graph `lepton_nn.onnx.export` writes from the very "
        "network lepton_nn runs (same weights), its output checked against lepton_nn's before "
        "timing; the targets compare it with lepton_nn's runtime (the float32 `.lnn` file).",
        "- The machine may be shared: compare ratios within one run, not absolute numbers "
        "across runs.",
        "- On a virtual machine the host may slow one CPU for seconds to minutes, and the "
        "round trip between two CPUs may swing: each table states each CPU's speed on a fixed "
        "compiled loop and the cross-CPU round trip at the start and end of its rounds "
        "(`bench.hoststate`), and a table measured on an uneven host is marked.",
        "- Two CPUs busy at once may also slow each other: each reading states the co-run "
        "speed, each CPU's fastest run of the fixed loop (and of a "
        f"{hoststate.STREAM_BYTES >> 20} MiB read) while the other CPU runs it too, over its "
        "fastest alone (1: no interference). Read a 2-thread figure's speed-up over 1 thread "
        "against 2 x the co-run speed, not 2 (the loop's for compute-bound work, the read's "
        "for bandwidth-bound work such as batch 1): at a co-run speed of 0.75 a speed-up of "
        "1.5 is all the host allows. It is not marked: it slows every engine of a 2-thread "
        "table alike, so their ratios stand.",
    ]
    errors = [(ph["threads"], c) for ph in res["phases"] for c in ph["cases"] if "error" in c]
    failed = [(ph["threads"], e, why) for ph in res["phases"] for e, why in ph["failed"].items()]
    if errors or failed:
        L += ["", "## Errors", ""]
        for t, e, why in failed:
            L.append(f"- threads {t}, {e}: worker failed to start: {why}")
        for t, c in errors:
            L.append(
                f"- threads {t}, {c['workload']} {c.get('engine')} {c.get('variant', '')}: "
                f"{c['error']}"
            )
    return "\n".join(L) + "\n"


def _load_line(cases: list[dict]) -> list[str]:
    """The load average (1/5/15 min) the workload's rounds ran under, and the attempts (a
    loaded table is marked above it, see :mod:`.loaded`)."""
    ld = next((c["load"] for c in cases if "load" in c), None)
    if ld is None:
        return []
    other = ld.get("foreign_cpus")
    other = "" if other is None else f"other processes used {other:.2f} CPUs meanwhile; "
    return [
        "",
        f"Load average before the rounds {ld['before']}, after {ld['after']}; {other}"
        f"{ld['attempts']} attempt(s).",
    ]


def _loaded_summary(res: dict, loaded: dict) -> str:
    """The report's first word on load: how many tables ran on a loaded machine."""
    tables = {(c["workload"], ph["threads"]) for ph in res["phases"] for c in ph["cases"]}
    tables |= {("W7", 0)} if res.get("coldstart") else set()
    if loaded:
        return (
            f"> **Warning: {len(loaded)} of {len(tables)} tables ran on a loaded machine** "
            f"(other processes used more than {QUIET_FOREIGN:g} CPUs during its rounds, or the "
            "fp32 GEMM peak per thread "
            f"below {100 * PEAK_COLLAPSE:.0f} % of this run's best); each is marked, and so "
            "are the targets taken from it. Their figures are not quiet ones."
        )
    return (
        f"No table ran on a loaded machine (other processes used at most {QUIET_FOREIGN:g} CPUs "
        "during any table's rounds, and "
        f"the fp32 GEMM peak per thread at least {100 * PEAK_COLLAPSE:.0f} % of this run's "
        "best wherever they were measured)."
    )


def _uneven(res: dict) -> dict:
    """The host-uneven tables by (workload, threads) (:mod:`.hoststate`)."""
    return {(w["workload"], w["threads"]): w for w in hoststate.host_warnings(res)}


def _host_summary(res: dict, uneven: dict) -> str:
    """The report's first word on the host: how many tables ran on uneven CPUs."""
    probed = {(c["workload"], ph["threads"]) for ph in res["phases"] for c in ph["cases"]
              if c.get("host")}  # fmt: skip
    if not probed:
        return "The host's state (each CPU's speed, the cross-CPU round trip) was not measured."
    rule = (
        f"a CPU below {hoststate.SPEED_UNEVEN:g} of the fastest one's speed on a fixed "
        f"compiled loop, or at more than one thread a cross-CPU cache-line round trip above "
        f"{hoststate.ROUND_TRIP_SLOW:g} ns, at the start or end of the table's rounds"
    )
    if uneven:
        return (
            f"> **Warning: {len(uneven)} of {len(probed)} tables ran on an uneven host** "
            f"({rule}); each is marked, and so are the targets taken from it."
        )
    return f"No table ran on an uneven host ({rule}); each table states the host's readings."


def _row_loaded(row: dict, loaded: dict) -> bool:
    """Whether a target row comes from a loaded table (``W5b1 runtime`` is W5b1's)."""
    return (str(row["workload"]).split()[0], row["threads"]) in loaded


def _case_table(cases: list[dict], ours: dict | None, peak: dict | None = None) -> list[str]:
    ok = [c for c in cases if "error" not in c]
    lat = any(c.get("latency") for c in ok)
    if lat:
        out = [
            "| engine · variant | median us | p99 us | round medians min-max us | "
            "lepton_nn speed-up |",
            "|---|---|---|---|---|",
        ]
        ok.sort(key=lambda c: c["latency_us"]["median"])
        for c in ok:
            la = c["latency_us"]
            up = (
                f"{la['median'] / ours['latency_us']['median']:.2f}x"
                if ours and "latency_us" in ours
                else ""
            )
            out.append(
                f"| {case_label(c)} | {la['median']:,.1f} | {la['p99']:,.1f} | "
                f"{la['min']:,.1f}–{la['max']:,.1f} | {up} |"
            )
        for c in ok:  # the native pool's share of a call (Case.jobs): the host or the call
            la = c["latency_us"]
            if "job_median" in la:
                out += [
                    "",
                    f"{case_label(c)}: the pool job took a median {la['job_median']:,.1f} us "
                    f"of the {la['job_calls']:,} calls that ran one (of {la['calls']:,}); the "
                    f"rest of such a call {la['outside_median']:,.1f} us.",
                ]
        return out
    unit = case_rate(ok[0])[1] if ok else "samples/s"
    fmt = (lambda v: f"{v:,.1f}") if unit == "GOP/s" else fmt_rate
    flops = any("gflop_per_s" in c for c in ok)
    out = [
        f"| engine · variant | median {unit} | min–max | lepton_nn ÷ this |"
        + (" GFLOP/s | % of GEMM peak |" if flops else ""),
        "|---|---|---|---|" + ("---|---|" if flops else ""),
    ]
    ok.sort(key=lambda c: -c["samples_per_s"]["median"])
    for c in ok:
        s = case_rate(c)[0]
        rel = (
            f"{ours['samples_per_s']['median'] / c['samples_per_s']['median']:.2f}x" if ours else ""
        )
        row = f"| {case_label(c)} | {fmt(s['median'])} | {fmt(s['min'])}–{fmt(s['max'])} | {rel} |"
        if flops:
            g, frac = c.get("gflop_per_s"), c.get("peak_fraction")
            row += f" {g['median']:,.1f} |" if g else " |"
            row += f" {100 * frac:.0f} % |" if frac is not None else " |"
        out.append(row)
    if flops:
        best = f"{peak['best']:.1f} GFLOP/s" if peak and "best" in peak else "not measured"
        out += [
            "",
            "GFLOP/s: the step's GEMM and convolution FLOPs (forward, weight and input "
            "gradients; `bench.workloads.training_flops`) per second; % of the fp32 GEMM peak "
            f"at this thread count ({best}).",
        ]
    if ours is not None and unit == "GOP/s":
        out += ["", f"lepton_nn ÷ this uses lepton_nn · {ours['variant']}; GOP/s = 2 M K N / time."]
    return out


def _cold_table(cold: dict) -> list[str]:
    out = [
        "| engine | process wall time median (min–max) | in-process import+load+predict | "
        "installed size (package dirs) |",
        "|---|---|---|---|",
    ]
    for e, r in cold.items():
        if "wall" not in r:
            out.append(f"| {e} | failed: {r.get('error')} | | |")
            continue
        w = r["wall"]
        ip = f"{r['inproc']['median']:.3f} s" if r.get("inproc") else ""
        size = f"{r['installed_mb']:,.1f} MB" if r.get("installed_mb") else ""
        out.append(f"| {e} | {w['median']:.3f} s ({w['min']:.3f}–{w['max']:.3f}) | {ip} | {size} |")
    out.append("")
    out.append(
        "Installed size counts the engine's own package directories only (TensorFlow: "
        "`tensorflow` + `keras`), not their other dependencies; lepton_nn needs NumPy. Every "
        "engine starts with its bytecode compiled, as an installed package has it (an untimed "
        "first round fills a private `PYTHONPYCACHEPREFIX`)."
    )
    return out


def parity_summary(parity: dict) -> list[dict]:
    """Mean and spread per (dataset, mode, engine), and whether each agrees with lepton_nn."""
    groups: dict[tuple, list[dict]] = {}
    for r in parity["rows"]:
        groups.setdefault((r["dataset"], r["mode"], r["engine"]), []).append(r)
    out = []
    for (ds, mode, engine), rs in groups.items():
        s = {
            "dataset": ds,
            "mode": mode,
            "engine": engine,
            "n": len(rs),
            "epochs": rs[0]["epochs"],
            "sizes": rs[0]["sizes"],
        }
        for k in ("accuracy", "roc_auc"):
            vals = [r[k] for r in rs]
            s[k] = statistics.fmean(vals)
            s[k + "_sd"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out.append(s)
    for s in out:
        ref = next(
            (
                t
                for t in out
                if t["engine"].startswith("lepton")
                and t["dataset"] == s["dataset"]
                and t["mode"] == s["mode"]
            ),
            None,
        )
        if ref is None or ref is s:
            s["agrees"] = None
            continue
        ok = True
        for k in ("accuracy", "roc_auc"):
            noise = 2 * (ref[k + "_sd"] ** 2 / ref["n"] + s[k + "_sd"] ** 2 / s["n"]) ** 0.5
            ok &= abs(ref[k] - s[k]) <= noise + 0.015
        s["agrees"] = ok
    return out


def _pm(s: dict, k: str) -> str:
    """Mean, with the standard deviation over runs when there are several."""
    return f"{s[k]:.4f} ± {s[k + '_sd']:.4f}" if s["n"] > 1 else f"{s[k]:.4f}"


def _parity_table(parity: dict) -> list[str]:
    out = [
        "| data | mode | engine | accuracy | ROC-AUC | runs | agrees with lepton_nn |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in parity_summary(parity):
        agree = {None: "", True: "yes", False: "**NO**"}[s["agrees"]]
        out.append(
            f"| {s['dataset']} | {s['mode']} | {s['engine']} | {_pm(s, 'accuracy')} | "
            f"{_pm(s, 'roc_auc')} | {s['n']} | {agree} |"
        )
    for e, why in parity.get("errors", {}).items():
        out.append(f"| | | {e} | failed: {why} | | | |")
    rows = parity["rows"]
    if rows:
        srcs = sorted(
            {f"{r['dataset']}: {r['source']}, {r['sizes']}, {r['epochs']} epochs" for r in rows}
        )
        out += [
            "",
            "Data and models: " + "; ".join(srcs) + ". Batch 64, Adam lr 1e-3, "
            "stratified 75/25 split (seed 0). *shared*: identical initial weights and batch "
            "order in every engine (differences are float32 numerics); *own*: each engine's "
            "own Glorot-uniform initializer and shuffling with seeds 0..n-1 (Trainer.fit, "
            "Model.fit, a standard PyTorch loop). Agreement: |difference| <= 2 standard "
            "errors + 0.015.",
        ]
    return out


def write_report(res: dict, out: str) -> dict[str, str]:
    """Write ``report.md``, ``results.json`` and the charts; returns their paths."""
    os.makedirs(out, exist_ok=True)
    res["load_check"] = load_check(res)
    res["host_check"] = hoststate.host_check(res)
    charts = write_charts(res, out)
    md = render_markdown(res)
    if charts:
        md += (
            "\n## Charts\n\n"
            + "\n".join(f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in charts)
            + "\n"
        )
    paths = {"markdown": os.path.join(out, "report.md"), "json": os.path.join(out, "results.json")}
    with open(paths["markdown"], "w", encoding="utf-8") as fh:
        fh.write(md)
    with open(paths["json"], "w", encoding="utf-8") as fh:
        json.dump(res, fh, separators=(",", ":"), default=json_default)
    paths["charts"] = ", ".join(charts)
    return paths


def console_summary(res: dict) -> str:
    """One line per target: ratio or value, and whether it is met."""
    lines = []
    loaded = {(w["workload"], w["threads"]): w for w in load_warnings(res)}
    uneven = _uneven(res)
    for r in target_rows(res):
        mark = "  [loaded machine]" if _row_loaded(r, loaded) else ""
        mark += "  [host uneven]" if _row_loaded(r, uneven) else ""
        if r["ratio"] is None:
            lines.append(
                f"  {r['workload']:<6} t={r['threads']}  lepton_nn {r['ours']:.3g} "
                f"{r.get('unit', '')}  target {r['target']}  "
                f"{'met' if r['met'] else 'NOT met'}{mark}"
            )
        else:
            lines.append(
                f"  {r['workload']:<6} t={r['threads']}  vs {r['peer']:<30} "
                f"{r['ratio']:6.2f}x  (target >= {r['target']}x)  "
                f"{'met' if r['met'] else 'NOT met'}{mark}"
            )
    return "\n".join(lines)
