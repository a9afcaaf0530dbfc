"""Request counters and histograms in the Prometheus text exposition format (version 0.0.4).

Updated from the server's event loop only (one thread: no locks). Each worker process keeps
its own (``--workers N``: scrape each, or run one worker per container).

    lepton_requests_total{model, endpoint, code}      counter
    lepton_request_seconds{model, endpoint}           histogram (latency, handler in to out)
    lepton_batch_rows{model}                          histogram (rows per network run)
    lepton_reloads_total{model, outcome}              counter (ok | failed)
    lepton_live_streams{model}                        gauge
"""

from __future__ import annotations

import bisect
from collections import defaultdict

__all__ = ["Metrics", "LATENCY_BUCKETS", "BATCH_BUCKETS"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Histogram:
    """Counts per upper bound (the last slot: above every bound), a sum and a count."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, v)] += 1
        self.sum += v

    def lines(self, name: str, labels: str) -> list[str]:
        out, total = [], 0
        for bound, c in zip((*self.bounds, "+Inf"), self.counts):
            total += c
            out.append(f'{name}_bucket{{{labels},le="{bound}"}} {total}')
        out.append(f"{name}_sum{{{labels}}} {self.sum:.6g}")
        out.append(f"{name}_count{{{labels}}} {total}")
        return out


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self.requests: defaultdict[tuple, int] = defaultdict(int)
        self.latency: dict[tuple, Histogram] = {}
        self.batches: dict[str, Histogram] = {}
        self.reloads: defaultdict[tuple, int] = defaultdict(int)

    def request(self, model: str, endpoint: str, code: int, seconds: float) -> None:
        self.requests[model, endpoint, code] += 1
        key = (model, endpoint)
        h = self.latency.get(key)
        if h is None:
            h = self.latency[key] = Histogram(LATENCY_BUCKETS)
        h.observe(seconds)

    def batch(self, model: str, rows: int) -> None:
        h = self.batches.get(model)
        if h is None:
            h = self.batches[model] = Histogram(BATCH_BUCKETS)
        h.observe(rows)

    def reload(self, model: str, ok: bool) -> None:
        self.reloads[model, "ok" if ok else "failed"] += 1

    def render(self, streams: dict[str, int]) -> str:
        out = ["# HELP lepton_requests_total Requests answered, by model, endpoint and status.",
               "# TYPE lepton_requests_total counter"]  # fmt: skip
        for (m, e, c), n in sorted(self.requests.items()):
            out.append(f'lepton_requests_total{{model="{_esc(m)}",endpoint="{e}",code="{c}"}} {n}')
        out += ["# HELP lepton_request_seconds Time from request in to response out.",
                "# TYPE lepton_request_seconds histogram"]  # fmt: skip
        for (m, e), h in sorted(self.latency.items()):
            out += h.lines("lepton_request_seconds", f'model="{_esc(m)}",endpoint="{e}"')
        out += ["# HELP lepton_batch_rows Rows per network run (dynamic batching).",
                "# TYPE lepton_batch_rows histogram"]  # fmt: skip
        for m, h in sorted(self.batches.items()):
            out += h.lines("lepton_batch_rows", f'model="{_esc(m)}"')
        out += ["# HELP lepton_reloads_total Model file reloads, by outcome.",
                "# TYPE lepton_reloads_total counter"]  # fmt: skip
        for (m, o), n in sorted(self.reloads.items()):
            out.append(f'lepton_reloads_total{{model="{_esc(m)}",outcome="{o}"}} {n}')
        out += ["# HELP lepton_live_streams Live streaming sessions' streams.",
                "# TYPE lepton_live_streams gauge"]  # fmt: skip
        for m, n in sorted(streams.items()):
            out.append(f'lepton_live_streams{{model="{_esc(m)}"}} {n}')
        return "\n".join(out) + "\n"
