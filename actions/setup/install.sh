#!/usr/bin/env bash
# Install mlflow-ci (from the action's own checkout, so the version is the ref the user pinned)
# and, when present, the project's requirements, into the Python on PATH. Uses uv.
#   MLFLOW_CI_SOURCE        folder holding mlflow-ci's pyproject.toml (the action checkout)
#   MLFLOW_CI_REQUIREMENTS  requirements file of the model project, relative to the working directory
#   MLFLOW_CI_STORE         server: what a check against a tracking server needs (mlflow-skinny);
#                           local: also MLflow's SQL store, for a store on the runner;
#                           none: a job that opens no store and scores nothing (the trusted publishers);
#                           auto (default): server when MLFLOW_CI_TRACKING_URI or MLFLOW_TRACKING_URI is http(s)
set -euo pipefail
python_bin="$(command -v python || command -v python3)"
if ! command -v uv >/dev/null 2>&1; then
  "$python_bin" -m pip install --quiet --disable-pip-version-check "uv==0.13.9"  # setup-uv normally provides it
fi
store="${MLFLOW_CI_STORE:-auto}"
if [ "$store" = auto ]; then
  case "${MLFLOW_CI_TRACKING_URI:-${MLFLOW_TRACKING_URI:-}}" in
    http://*|https://*) store=server ;;
    *) store=local ;;
  esac
fi
case "$store" in
  none) packages=("${MLFLOW_CI_SOURCE}") ;;
  server) packages=("${MLFLOW_CI_SOURCE}[evaluate,genai]") ;;
  local) packages=("${MLFLOW_CI_SOURCE}[local,evaluate,genai]") ;;
  *) echo "::error title=mlflow-ci setup::MLFLOW_CI_STORE must be server, local, none or auto"; exit 2 ;;
esac
if [ -n "${MLFLOW_CI_REQUIREMENTS:-}" ] && [ -f "$MLFLOW_CI_REQUIREMENTS" ]; then
  packages+=(-r "$MLFLOW_CI_REQUIREMENTS")
elif [ -n "${MLFLOW_CI_REQUIREMENTS:-}" ] && [ "$MLFLOW_CI_REQUIREMENTS" != "requirements.txt" ]; then
  echo "::error title=mlflow-ci setup::requirements file '$MLFLOW_CI_REQUIREMENTS' not found"
  exit 2
fi
uv pip install --quiet --python "$python_bin" --compile-bytecode "${packages[@]}"
version="$("$python_bin" -m mlflow_ci --version)"
echo "installed ${version} for ${python_bin} (${store} store)"
echo "version=${version##* }" >> "$GITHUB_OUTPUT"
