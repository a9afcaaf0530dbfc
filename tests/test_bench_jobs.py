"""W5's latency cases record each call's native pool job time beside its latency
(Case.jobs), so a slow call shows whether the pool's job was slow (the host) or the rest of
the call: the pairing of jobs to calls, the round reply, the summary and the report line, and
the real W5b1 runtime case at 2 threads."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lepton_nn.bench import report, runner, worker
from lepton_nn.bench.cases import Case, per_call_jobs


def test_each_call_gets_the_jobs_posted_while_it_ran():
    # calls [0, 10), [10, 20), [20, 30) ns: one job, none, two (summed); a job posted at a
    # call's end belongs to the next call
    got = per_call_jobs([0, 10, 20], [10, 20, 30], [25, 3, 21, 10], [1000, 2000, 4000, 8000])
    assert got[0] == pytest.approx(2e-6)
    assert got[1] == pytest.approx(8e-6)
    assert got[2] == pytest.approx(5e-6)
    assert math.isnan(per_call_jobs([0], [5], [7], [1])[0])


def test_a_latency_round_reports_the_job_and_the_rest_of_its_calls():
    seen = {}

    def jobs(n):
        seen["n"] = n
        return lambda: (np.array([], np.int64), np.array([], np.int64))

    case = Case("W5b1", "lepton:test", "runtime", "", 1, step=lambda i: None, latency=True,
                jobs=jobs)  # fmt: skip
    times = case.run(5)
    assert seen["n"] == 5 and len(times) == 5 and len(case.job_seconds) == 5
    assert all(math.isnan(j) for j in case.job_seconds)  # no pool job ran
    assert "job_quantiles_us" not in worker._round_reply(times, case.job_seconds)
    r = worker._round_reply([10e-6, 30e-6, 20e-6], [8e-6, float("nan"), 15e-6])
    assert r["job_calls"] == 2 and r["calls"] == 3
    assert r["job_quantiles_us"][100] == pytest.approx(11.5)
    assert r["outside_quantiles_us"][0] == pytest.approx(2.0)
    assert r["outside_quantiles_us"][-1] == pytest.approx(5.0)
    c = {"n": 3, "samples": 1, "latency": True, "rounds": [r, r], "engine": "lepton:test",
         "variant": "runtime"}  # fmt: skip
    la = runner._summarize(c)["latency_us"]
    assert la["job_calls"] == 4 and la["job_median"] == pytest.approx(11.5)
    assert la["outside_median"] == pytest.approx(3.5)
    md = "\n".join(report._case_table([{**c, "latency_us": la}], None))
    assert "the pool job took a median 11.5 us of the 4 calls that ran one (of 6)" in md


def test_the_w5_runtime_case_records_a_pool_job_per_call_at_2_threads():
    pytest.importorskip("lepton_nn.kernels._pool")
    from lepton_nn.backend.threads import set_num_threads
    from lepton_nn.bench.cases import build_cases

    set_num_threads(2)
    try:
        cases = {c.variant: c for c in build_cases("lepton:cython", "W5b1")}
        case = cases["runtime"]
        assert case.jobs is not None
        times = case.run(50)
    finally:
        set_num_threads(None)
    jobs = np.asarray(case.job_seconds)
    ran = ~np.isnan(jobs)
    # a job of the pool for most calls (a loaded machine may run one on its caller alone),
    # never longer than its call
    assert ran.sum() >= 25
    assert np.all(jobs[ran] <= np.asarray(times)[ran])
