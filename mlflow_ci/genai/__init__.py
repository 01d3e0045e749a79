"""GenAI apps under the same gate as models: per-row scorers (deterministic ones here, LLM judges with a
hard budget in :mod:`.judge`) whose means become ``genai.*`` metrics with paired intervals.

Plain Python and ``requests``: no MLflow import (the tracking wing does that), no model loading.
"""
