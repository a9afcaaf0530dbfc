"""PNG bar charts of the results, one per workload and thread count (when matplotlib is
installed)."""

from __future__ import annotations

import os
import textwrap

from .options import WORKLOAD_TITLES
from .targets import case_label, case_rate


def write_charts(res: dict, out: str) -> list[str]:
    """One horizontal bar chart per workload and thread count (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    paths = []
    for ph in res["phases"]:
        by_wl: dict[str, list[dict]] = {}
        for c in ph["cases"]:
            if "error" not in c:
                by_wl.setdefault(c["workload"], []).append(c)
        for wl, cases in by_wl.items():
            lat = any(c.get("latency") for c in cases)
            key = (lambda c: c["latency_us"]) if lat else (lambda c: case_rate(c)[0])
            cases.sort(key=lambda c: key(c)["median"], reverse=not lat)
            med = [key(c)["median"] for c in cases]
            lo = [m - key(c)["min"] for m, c in zip(med, cases)]
            hi = [key(c)["max"] - m for m, c in zip(med, cases)]
            colors = ["#d95f02" if c["engine"].startswith("lepton") else "#7570b3" for c in cases]
            fig, ax = plt.subplots(figsize=(8, 0.45 * len(cases) + 1.2))
            ax.barh([case_label(c) for c in cases], med, xerr=[lo, hi], color=colors, capsize=3)
            ax.invert_yaxis()
            ax.set_xlabel(
                "median latency, us (lower is better)"
                if lat
                else f"{case_rate(cases[0])[1]}, median (higher is better)"
            )
            title = textwrap.fill(WORKLOAD_TITLES.get(wl, wl), 70)  # long ones on two lines
            ax.set_title(f"{title}\n{ph['threads']} thread(s)", fontsize=9)
            if lat:
                ax.set_xscale("log")
            fig.tight_layout()
            p = os.path.join(out, f"chart-{wl}-t{ph['threads']}.png")
            fig.savefig(p, dpi=110)
            plt.close(fig)
            paths.append(p)
    return paths
