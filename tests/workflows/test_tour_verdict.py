"""The tour's verdict lines and warnings (:mod:`bayesdl.reports.verdict`), on synthetic numbers:
a section passes only when its fits converged, their checks passed and its numbers sit in the
accepted ranges; every warning shown while a section is built reaches its HTML, in the
console's words, and is still printed."""

from __future__ import annotations

import math
import warnings

import pytest

from bayesdl.inference.convergence import ConvergenceWarning, warn_unconverged
from bayesdl.reports import lecture_verdicts, page, verdict
from bayesdl.reports.compare import MEAN_LIMIT, SD_RANGE

VI_OK = {
    "converged": True,
    "checks": {
        "convergence": {"verdict": "pass"},
        "k_hat": {"value": 0.31, "verdict": "good"},
    },
}
VI_BAD = {
    "converged": False,
    "checks": {
        "convergence": {"verdict": "fail"},
        "k_hat": {"value": 0.93, "verdict": "bad"},
    },
}
NUTS_OK = {
    "converged": True,
    "checks": {
        "convergence": {"verdict": "pass"},
        "r_hat": {"value": 1.004, "verdict": "pass"},
        "ess": {"value": 512.0, "verdict": "pass"},
        "divergences": {"value": 0, "verdict": "pass"},
    },
}


def test_within_names_what_is_outside_and_a_nan_is_outside():
    ok, text = verdict.within([("a", 0.1, -0.3, 0.3), ("b", 1.1, 0.7, 1.3)])
    assert ok is True and text.startswith("2 of 2")
    ok, text = verdict.within([("a", 0.5, -0.3, 0.3), ("b", math.nan, 0.7, 1.3)])
    assert ok is False
    assert "0 of 2" in text and "a 0.5 not in [-0.3, 0.3]" in text and "b nan" in text
    assert verdict.within([]) == (None, "nothing to compare")


def test_a_passing_section_says_so_with_its_diagnostics():
    v = verdict.runs_verdict([("VI", VI_OK), ("NUTS", NUTS_OK)], *verdict.within([("x", 0, -1, 1)]))
    assert v.status == "pass" and v.converged is True and v.diagnostics_ok is True
    line = v.line()
    assert line.startswith("Verdict: PASS.")
    assert "2 of 2 converged" in line
    for shown in ("VI k-hat 0.31 (good)", "NUTS R-hat 1.004 (pass)", "NUTS ESS 512 (pass)"):
        assert shown in line, line
    assert "class='verdict pass'" in v.html()


@pytest.mark.parametrize(
    "summaries, checks, why",
    [
        ([("a", VI_BAD)], [("x", 0.0, -1.0, 1.0)], "NOT converged: a"),  # did not converge
        ([("a", VI_OK)], [("x", 2.0, -1.0, 1.0)], "x 2 not in [-1, 1]"),  # off the reference
        (
            [("a", {**VI_OK, "checks": VI_BAD["checks"]})],
            [("x", 0.0, -1.0, 1.0)],
            "k-hat 0.93 (bad)",
        ),  # a failed check
    ],
)
def test_a_failing_section_fails_and_says_why(summaries, checks, why):
    v = verdict.runs_verdict(summaries, *verdict.within(checks))
    assert v.status == "fail"
    assert v.line().startswith("Verdict: FAIL.") and why in v.line(), v.line()
    assert "class='verdict fail'" in v.html()


def test_nothing_compared_is_incomplete_not_a_pass():
    v = verdict.runs_verdict([("a", VI_OK)], None, "no exact answer")
    assert v.status == "incomplete" and "INCOMPLETE" in v.line()
    assert verdict.no_fit("nothing fitted").status == "incomplete"


def test_rows_agreement_judges_only_rows_with_an_accepted_range():
    rows = [
        ("mean", 0.5, 0.52, "exact", (0.45, 0.55)),
        ("KL", 0.0, 0.2, "ideal"),  # an ideal is shown, not judged
        ("old", 1.0, 9.0),  # a three-tuple row: kind "reference", not judged
    ]
    assert verdict.rows_agreement([("run", rows)]) == (
        True,
        "1 of 1 rows within their accepted range",
    )
    rows[0] = ("mean", 0.5, 0.7, "exact", (0.45, 0.55))
    ok, text = verdict.rows_agreement([("run", rows)])
    assert ok is False and "mean 0.7 not in [0.45, 0.55]" in text
    assert verdict.rows_agreement([("run", [("KL", 0.0, 0.1, "ideal")])])[0] is None


def test_the_table_keeps_true_answers_and_ideals_in_separate_columns():
    html = page.comparison_table(
        [
            page.comparison_row(("posterior mean", 0.53, 0.54, "exact", (0.5, 0.56))),
            page.comparison_row(("ECE", 0.0, 0.04, "ideal")),
            page.comparison_row(("posterior std", 0.09, 0.02, "exact", (0.063, 0.117))),
        ]
    )
    cells = [row.split("<td>")[1:] for row in html.split("<tr>")[2:]]
    assert cells[0][1].startswith("0.53") and cells[0][2].startswith("&ndash;")
    assert cells[1][1].startswith("&ndash;") and cells[1][2].startswith("0 (ideal)")
    assert cells[0][5].startswith("yes") and cells[2][5].startswith("<b>NO</b>")
    assert "exact / NUTS reference" in html and "ideal, bound, paper or baseline" in html


def test_collected_warnings_reach_the_section_and_are_still_printed(capsys):
    with warnings.catch_warnings(record=True) as outer:
        warnings.simplefilter("always")
        with verdict.collect_warnings() as caught:
            warn_unconverged({"converged": False, "reason": "the ELBO was still rising"})
            warnings.warn("something else", UserWarning, stacklevel=1)
    assert [w.category for w in outer] == [ConvergenceWarning, UserWarning]  # still shown
    assert caught[0].startswith("ConvergenceWarning: the fit has not converged: the ELBO was")
    assert caught[1] == "UserWarning: something else"
    html = verdict.finish("<section><h2>s</h2></section>", verdict.no_fit("x"), caught)
    assert html.endswith("</section>")
    body = html[: html.rindex("</section>")]
    assert body.index("has not converged") < body.index("class='verdict")  # verdict last
    assert "UserWarning: something else" in html


def test_lecture_verdicts_on_synthetic_records():
    fits = [("coin #1", True), ("coin #2", False)]
    record = {
        "sequential": {"exact": [(21.0, 21.0)], "at_once": (21.0, 21.0),
                       "mean_shift_sd": 0.05, "sd_ratio": 1.02},
    }  # fmt: skip
    v = lecture_verdicts.sequential(record, fits[:1])
    assert v.status == "pass", v.line()
    v = lecture_verdicts.sequential(record, fits)
    assert v.status == "fail" and "NOT converged: coin #2" in v.line()
    record["sequential"]["mean_shift_sd"] = MEAN_LIMIT + 0.1
    v = lecture_verdicts.sequential(record, fits[:1])
    assert v.status == "fail" and "mean shift" in v.line()
    record["sequential"].update(mean_shift_sd=0.0, sd_ratio=SD_RANGE[1] + 0.1)
    assert lecture_verdicts.sequential(record, fits[:1]).status == "fail"
    rows = [["guide: q", -10.0, -10.5, "x", 0.5, 0.5, 0.52, 0.4]]
    assert lecture_verdicts.elbo_kl({"elbo_kl": {"coin": rows}}, []).agrees is True
    rows[0][7] = 3.5  # the Monte Carlo gap 3.5 standard errors from the KL
    assert lecture_verdicts.elbo_kl({"elbo_kl": {"coin": rows}}, []).agrees is False


def test_bnn_rows_label_ideals_apart_from_targets():
    """The BNN's rows off MNIST: accuracy judged against the 0.93 target, ECE 0 and AUROC 1
    labelled ideals, never in the true-answer column."""
    import bayesdl.workflows  # noqa: F401  (registers the built-in models)
    from bayesdl.workflows.fit_options import from_keywords
    from bayesdl.workflows.registry import REGISTRY

    w = REGISTRY["bnn"]
    test = {"accuracy": 0.91, "nll": 0.3, "ece": 0.03, "brier": 0.1, "mutual_information": 0.1}
    rows = w(from_keywords(w, guide="meanfield")).comparison(
        {"test": test, "ood": {"noise": {"auroc_entropy": 0.99}}}
    )
    kinds = {r[0]: page.comparison_row(r) for r in rows}
    assert kinds["test accuracy"]["kind"] == "target"
    assert kinds["test accuracy"]["ok"] is False  # 0.91 < 0.93
    assert kinds["ECE (15 bins)"]["kind"] == "ideal"
    assert kinds["OOD AUROC of entropy: noise"]["kind"] == "ideal"
    assert not any(r["kind"] in page.TRUE_KINDS for r in kinds.values())
    assert verdict.rows_agreement([("bnn", rows)])[0] is False
