"""GenAI apps under the same gate as models: per-row scorers (deterministic ones here, LLM judges with a
hard budget in :mod:`.judge`) whose means become ``genai.*`` metrics with paired intervals.

Plain Python and ``requests``: no MLflow import. MLflow's own scorers run in the tracking wing's child
Python (:mod:`mlflow_ci.tracking.scoring`), their judges through :mod:`.proxy`; a champion model is
loaded by the tracking wing.
"""
