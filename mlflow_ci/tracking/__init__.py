"""The tracking wing: the only part of mlflow-ci that talks to MLflow.

Three clients share one interface (:class:`~mlflow_ci.tracking.mlflow_client.MlflowTracker`'s):
MLflow's own, a REST client for http(s) servers and a ``sqlite3`` client for a local store. The
shared types and tags are in :mod:`.base`, which imports none of them; :func:`open_tracker` picks one.
"""

from __future__ import annotations

from typing import Mapping

from mlflow_ci.tracking.base import *  # noqa: F403 - the wing's vocabulary (base.__all__)
from mlflow_ci.tracking.base import __all__ as _vocabulary
from mlflow_ci.tracking.mlflow_client import MlflowTracker

__all__ = [*_vocabulary, "MlflowTracker", "open_tracker"]


def open_tracker(tracking_uri: str, env: Mapping[str, str]):
    """The tracker for a URI, the cheapest that is exact: MLflow's REST API directly for http(s)
    servers (``MLFLOW_CI_REST=false`` opts out), ``sqlite3`` directly for a local SQLite store at a
    known schema revision (``MLFLOW_CI_SQLITE=false`` opts out), MLflow's own client otherwise."""
    if tracking_uri.startswith(("http://", "https://")) and env.get("MLFLOW_CI_REST", "true").lower() != "false":
        from mlflow_ci.tracking.rest import RestTracker

        return RestTracker(tracking_uri, env)
    if tracking_uri.startswith("sqlite:///"):
        from mlflow_ci.tracking.sqlite import open_sqlite

        fast = open_sqlite(tracking_uri, env)
        if fast is not None:
            return fast
    return MlflowTracker(tracking_uri)


