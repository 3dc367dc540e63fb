"""`bayesdl tour --jobs N`: the sections run in N processes and the page does not change."""

from __future__ import annotations

import json

import pytest

from bayesdl.reports.tour_jobs import Job, default_jobs, run_jobs

JOBS = [Job(t, "tour_job_module", (("tag", t),)) for t in ("first", "second")]


def test_two_workers_give_the_page_of_one_in_the_tours_order(tmp_path):
    """Each job starts from the same seed wherever it runs: a fit without a seed and a draw from
    torch's global generator come out the same in one process as in two, in the jobs' order."""
    alone = run_jobs(JOBS, tmp_path, overwrite=False, progress=False, workers=1)
    pids_alone = {json.loads((tmp_path / f"{j.name}.json").read_text())["pid"] for j in JOBS}
    shared = run_jobs(JOBS, tmp_path, overwrite=False, progress=False, workers=2, threads=1)
    pids = {json.loads((tmp_path / f"{j.name}.json").read_text())["pid"] for j in JOBS}
    assert shared == alone
    assert [s.split()[0] for s in shared] == ["first", "second"]
    assert len(pids_alone) == 1 and not pids & pids_alone
    assert {json.loads((tmp_path / f"{j.name}.json").read_text())["threads"] for j in JOBS} == {1}
    # the same job twice in one process: the second run does not inherit the first's RNG state
    assert len({s.split(maxsplit=1)[1] for s in alone}) == 1


def test_a_failing_job_fails_the_tour_with_its_error(tmp_path):
    bad = [*JOBS[:1], Job("broken", "tour_job_module", (("tag", "x"), ("nope", 1)))]
    with pytest.raises(TypeError, match="nope"):
        run_jobs(bad, tmp_path, overwrite=False, progress=False, workers=2)


def test_default_jobs_is_one_per_core_at_most_four():
    assert 1 <= default_jobs() <= 4


def test_bad_jobs_is_one_line(capsys):
    from bayesdl import cli

    assert cli.main(["tour", "--out", "unused", "--jobs", "0"]) == 2
    assert capsys.readouterr().err.strip() == "bayesdl: error: --jobs must be at least 1, got 0"
