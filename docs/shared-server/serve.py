"""Entry point of the `mlflow` service in compose.yaml (and of the test that runs it outside Docker).

Everything comes from the environment; nothing is baked into the image:

  MLFLOW_BACKEND_STORE_URI      postgresql://user:password@host:5432/mlflow (runs, registry)
  MLFLOW_AUTH_DATABASE_URI      postgresql://user:password@host:5432/mlflow_auth (users; created if missing)
  MLFLOW_ARTIFACTS_DESTINATION  s3://bucket/prefix (created if missing; the server proxies all artifact traffic)
  MLFLOW_S3_ENDPOINT_URL        the S3-compatible endpoint, with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
  MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD   the first admin (used once, on an empty user store)
  MLFLOW_FLASK_SERVER_SECRET_KEY  a fixed random secret (CSRF protection of the auth app)
  MLFLOW_HOST (0.0.0.0), MLFLOW_PORT (5000), MLFLOW_WORKERS (2)

Before the server starts it waits for the database and the bucket, brings MLflow's schema up to date
(`mlflow db upgrade`), adds the tag index of tag-index.sql and writes the auth app's configuration.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent


def need(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        sys.exit(f"serve.py: {name} is not set (see the top of {Path(__file__).name})")
    return value


def retry(what: str, attempt, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return attempt()
        except Exception as exc:  # noqa: BLE001 - the service may still be starting
            if time.monotonic() > deadline:
                sys.exit(f"serve.py: {what} did not answer in {timeout:g} s: {type(exc).__name__}: {exc}")
            time.sleep(1)


def ensure_database(uri: str) -> None:
    """Create the database ``uri`` names when it is missing (the auth app's own)."""
    import sqlalchemy

    name = sqlalchemy.engine.make_url(uri).database
    server = sqlalchemy.create_engine(sqlalchemy.engine.make_url(uri).set(database="postgres"),
                                      isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        found = conn.execute(sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
        if not found:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    server.dispose()


def ensure_bucket(destination: str) -> None:
    import boto3
    from botocore.exceptions import ClientError

    bucket = urlparse(destination).netloc
    s3 = boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None)
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
            raise
        s3.create_bucket(Bucket=bucket)


def add_tag_index(uri: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text((HERE / "tag-index.sql").read_text()))
    engine.dispose()


def auth_config(database_uri: str) -> Path:
    """The basic-auth app's ini: its user store, and READ for users without a grant."""
    path = Path(tempfile.mkdtemp(prefix="mlflow-auth-")) / "basic_auth.ini"
    path.write_text("[mlflow]\n"
                    "default_permission = READ\n"
                    f"database_uri = {database_uri}\n"
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    path.chmod(0o600)
    return path


def main() -> None:
    backend, auth_db = need("MLFLOW_BACKEND_STORE_URI"), need("MLFLOW_AUTH_DATABASE_URI")
    artifacts = need("MLFLOW_ARTIFACTS_DESTINATION")
    need("MLFLOW_AUTH_ADMIN_PASSWORD")
    need("MLFLOW_FLASK_SERVER_SECRET_KEY")
    retry("the database", lambda: ensure_database(auth_db))
    retry("the S3 endpoint", lambda: ensure_bucket(artifacts))
    subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", backend], check=True)
    add_tag_index(backend)
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(auth_config(auth_db))}
    args = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
            "--backend-store-uri", backend, "--artifacts-destination", artifacts,
            "--host", os.environ.get("MLFLOW_HOST", "0.0.0.0"), "--port", os.environ.get("MLFLOW_PORT", "5000"),
            "--workers", os.environ.get("MLFLOW_WORKERS", "2")]
    os.execve(sys.executable, args, env)


if __name__ == "__main__":
    main()
