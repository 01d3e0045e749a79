"""mlflow-ci: ML models under the same release cycle as application code."""

__version__ = "0.1.0"
