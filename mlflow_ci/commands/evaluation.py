"""``evaluate:`` as the commands call it: imported only when configured (it needs NumPy and pandas, which
a check without it does not), for the candidate against its baseline, or for one run alone (a base commit
trained in the job is scored before it is judged)."""

from __future__ import annotations

from dataclasses import replace

from mlflow_ci import compare as cmp
from mlflow_ci.errors import UsageError


def evaluate(s, tracker, comparison: cmp.Comparison, *, keep: bool = True):
    """:func:`mlflow_ci.evaluate.rows.evaluate_rows` on the session's config and store, unless the
    candidate's run keeps the result for this baseline and these rows (:mod:`mlflow_ci.evaluate.kept`)."""
    from mlflow_ci.evaluate import kept

    found = kept.lookup(s.cfg, tracker, comparison)
    if found is not None:
        return found
    try:
        from mlflow_ci.evaluate.rows import evaluate_rows
    except ModuleNotFoundError as exc:
        raise UsageError(f"evaluate: needs {exc.name}, which is not installed: pip install 'mlflow-ci[evaluate]' "
                         "(or add numpy and pandas to the project's requirements)") from None
    return evaluate_rows(s.cfg, tracker, s.registry, comparison, keep=keep, env=s.env)


def evaluate_alone(s, tracker, run):
    """``run`` with the ``eval.*`` values of the same evaluation a candidate gets (logged with the run)."""
    evaluated = evaluate(s, tracker, cmp.Comparison(candidate=run, baseline=None, metrics=(), params=()))
    return replace(run, metrics={**run.metrics, **evaluated.comparison.candidate.metrics})
