"""`mlflow-ci.yml`: its vocabulary here, the declared models in :mod:`.models`, loading, validation
and the JSON Schema in :mod:`.loader`.

This package's own namespace holds only plain constants, so that the command line can name its
choices (``--comment``) without importing pydantic: ``mlflow-ci --help`` stays instant.
"""

from __future__ import annotations

import re

DEFAULT_CONFIG = "mlflow-ci.yml"
# Where editors fetch the JSON Schema (the committed schema/mlflow-ci.schema.json of the default branch).
SCHEMA_URL = "https://raw.githubusercontent.com/mlflow-ci/mlflow-ci/main/schema/mlflow-ci.schema.json"
DEFAULT_TIMEOUT = 3600.0
BASELINE_SOURCES = ("alias", "base_commit", "base_branch", "base_trained")
COMMENT_MODES = ("always", "on-change", "on-failure", "never")
RULE_BOUNDS = ("min", "max")
RULE_BASELINE = ("max_drop", "max_drop_pct")
RULE_MLFLOW = ("threshold", "min_absolute_change", "min_relative_change")
LIMIT_RULES = (*RULE_BOUNDS, *RULE_BASELINE, *RULE_MLFLOW)  # the rules that carry a number
# The metrics evaluate: computes (mlflow_ci.evaluate.metrics implements exactly these).
CLASSIFICATION = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "f1_macro", "f1_weighted",
                  "precision_macro", "recall_macro", "roc_auc", "log_loss", "brier")
REGRESSION = ("mae", "mse", "rmse", "r2", "mape")
DEFAULT_METRICS = {"classification": ("accuracy", "f1_macro", "roc_auc", "log_loss"),
                   "regression": ("rmse", "mae", "r2")}
# Deterministic GenAI scorers (mlflow_ci.genai.scorers): those that need an argument, and those that take none.
GENAI_SCORERS = ("exact_match", "contains")
GENAI_SCORERS_WITH_ARGUMENT = ("regex", "json_valid", "max_length", "max_latency_ms")
# MLflow's built-in scorers a {mlflow: ...} entry may name (mlflow.genai.scorers): the metric each reports
# by default and whether it asks an LLM judge. Those that read traces (retrieval, tool calls) or whole
# conversations are left out: a check scores rows.
MLFLOW_SCORER = "mlflow"
MLFLOW_SCORERS = {"Correctness": ("correctness", True), "Guidelines": ("guidelines", True),
                  "ExpectationsGuidelines": ("expectations_guidelines", True),
                  "RelevanceToQuery": ("relevance_to_query", True), "Safety": ("safety", True),
                  "Fluency": ("fluency", True), "Equivalence": ("equivalence", True),
                  "Completeness": ("completeness", True), "Summarization": ("summarization", True),
                  "RegexMatch": ("regex_match", False), "PIIDetection": ("pii_detection", False),
                  "ResponseLength": ("response_length", False)}
# Judges named by MLflow's provider URI (openai:/gpt-4o-mini): each provider's OpenAI-compatible API and the
# variable that holds its key by convention (None: a local server without one).
JUDGE_PROVIDERS = {"openai": ("https://api.openai.com/v1", "OPENAI_API_KEY"),
                   "anthropic": ("https://api.anthropic.com/v1", "ANTHROPIC_API_KEY"),
                   "gemini": ("https://generativelanguage.googleapis.com/v1beta/openai", "GEMINI_API_KEY"),
                   "mistral": ("https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
                   "groq": ("https://api.groq.com/openai/v1", "GROQ_API_KEY"),
                   "togetherai": ("https://api.together.xyz/v1", "TOGETHER_API_KEY"),
                   "ollama": ("http://localhost:11434/v1", None)}
# The reusable PR workflow exports its judge-api-key secret under this name, whatever judge.api_key_env says;
# the code of the pull request (training, the app) never gets it in its environment.
WORKFLOW_JUDGE_KEY = "MLFLOW_CI_JUDGE_API_KEY"
USER_METRIC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")  # module:function(y_true, output) -> float
