#!/usr/bin/env bash
# Run `mlflow-ci check` with the action's inputs (passed through the environment, never inlined).
#   MLFLOW_CI_CONFIG, MLFLOW_CI_OUT, MLFLOW_CI_COMMENT, MLFLOW_CI_PUBLISH (auto|true|false),
#   MLFLOW_CI_BASELINE, MLFLOW_CI_FAIL_ON_GATE (true|false), MLFLOW_CI_TRACKING_URI, MLFLOW_CI_ALL (true|false)
set -uo pipefail
# An empty input must not clobber a MLFLOW_TRACKING_URI set on the job.
if [ -n "${MLFLOW_CI_TRACKING_URI:-}" ]; then export MLFLOW_TRACKING_URI="$MLFLOW_CI_TRACKING_URI"; fi
args=(check --config "${MLFLOW_CI_CONFIG:-mlflow-ci.yml}" --out "${MLFLOW_CI_OUT:-.mlflow-ci}")
if [ -n "${MLFLOW_CI_COMMENT:-}" ]; then args+=(--comment "$MLFLOW_CI_COMMENT"); fi
case "${MLFLOW_CI_PUBLISH:-auto}" in
  auto) ;;
  true) args+=(--publish) ;;
  false) args+=(--no-publish) ;;
  *) echo "::error title=mlflow-ci::input 'publish' must be auto, true or false"; exit 2 ;;
esac
if [ -n "${MLFLOW_CI_BASELINE:-}" ]; then args+=(--baseline "$MLFLOW_CI_BASELINE"); fi
case "${MLFLOW_CI_ALL:-false}" in
  true) args+=(--all) ;;
  false) ;;
  *) echo "::error title=mlflow-ci::input 'all-projects' must be true or false"; exit 2 ;;
esac
mlflow-ci "${args[@]}"
code=$?
echo "exit-code=${code}" >> "$GITHUB_OUTPUT"
if [ "$code" -eq 1 ] && [ "${MLFLOW_CI_FAIL_ON_GATE:-true}" = "false" ]; then
  echo "::warning title=mlflow-ci::the gate failed; not failing the job because fail-on-gate is false"
  exit 0
fi
exit "$code"
