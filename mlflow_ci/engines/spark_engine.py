"""``evaluate.engine: spark``: Spark reads the Parquet files (its readers, its partitioning, its
credentials) and every partition's Python worker scores its rows with both models and reduces them
there (``mapInPandas``); one packed result per partition comes back to the driver.

The model folders (verified copies of what was logged) are shipped with ``SparkContext.addFile``,
each loaded once per Python worker. The master is ``MLFLOW_CI_SPARK_MASTER`` (default ``local[*]``:
a Spark inside this job, the workers on the runner's cores); on a cluster, the workers' Python needs
mlflow-ci and the models' libraries, as the job's own Python has them.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Iterator, Mapping

from mlflow_ci.engines.base import Job, add_up, path_key
from mlflow_ci.errors import ServiceError, UsageError

MASTER_VARIABLE = "MLFLOW_CI_SPARK_MASTER"
FILE_COLUMN, INDEX_COLUMN = "__mlflow_ci_file", "__mlflow_ci_index"
BATCH_ROWS = 100_000  # rows a Python worker gets at once (Arrow batches)


class SparkEngine:
    name = "spark"

    def __init__(self, session, owned: bool) -> None:
        self.session, self.owned = session, owned
        self._shipped = Path(tempfile.mkdtemp(prefix="mlflow-ci-spark-"))

    @classmethod
    def connect(cls, env: Mapping[str, str]) -> "SparkEngine":
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise UsageError("evaluate.engine: spark needs PySpark: pip install 'mlflow-ci[spark]'") from None
        master = env.get(MASTER_VARIABLE) or "local[*]"
        if env.get("SPARK_LOCAL_IP"):  # the driver's JVM starts from this process's environment
            os.environ["SPARK_LOCAL_IP"] = env["SPARK_LOCAL_IP"]
        owned = SparkSession.getActiveSession() is None
        builder = (SparkSession.builder.master(master).appName("mlflow-ci evaluate")
                   .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
                   .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(BATCH_ROWS)))
        if master.startswith("local"):  # the driver's JVM receives every partition's partial statistics
            builder = builder.config("spark.driver.memory", env.get("MLFLOW_CI_SPARK_DRIVER_MEMORY", "2g"))
        if master.startswith("local") and "PYSPARK_PYTHON" not in os.environ:
            os.environ["PYSPARK_PYTHON"] = sys.executable  # the workers are this machine's: this job's Python
        try:
            return cls(builder.getOrCreate(), owned)
        except Exception as exc:  # noqa: BLE001 - no Java, a master that does not answer, ...
            raise ServiceError(f"Spark ({master}): cannot start a session ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None

    def run(self, job: Job) -> Iterator[bytes]:
        from pyspark.sql import functions as F

        context = self.session.sparkContext
        shipped = {}
        for role, folder in job.models.items():
            name = f"mlflow-ci-{role}-{uuid.uuid4().hex[:12]}"  # addFile keeps the folder's name: one per model
            shutil.copytree(folder, self._shipped / name)
            context.addFile(str(self._shipped / name), recursive=True)
            shipped[role] = name
        offsets = {path_key(f): o for f, o in zip(job.files, job.offsets)}
        frame = self.session.read.parquet(*job.files).select(
            "*", F.col("_metadata.file_path").alias(FILE_COLUMN), F.col("_metadata.row_index").alias(INDEX_COLUMN))
        reduce, pack = job.reduce, job.pack

        def per_partition(batches):
            import pandas as pd
            from pyspark import SparkFiles

            paths = {role: SparkFiles.get(name) for role, name in shipped.items()}

            def reduced(batch):
                starts = batch[FILE_COLUMN].map(lambda f: offsets[path_key(f)]).to_numpy(dtype="int64")
                ids = starts + batch[INDEX_COLUMN].to_numpy(dtype="int64")
                return reduce(batch.drop(columns=[FILE_COLUMN, INDEX_COLUMN]), ids, paths)

            summed = add_up(reduced(batch) for batch in batches)
            if summed is not None:
                yield pd.DataFrame({"result": [pack(summed)]})

        for row in frame.mapInPandas(per_partition, "result binary").toLocalIterator():
            yield bytes(row["result"])

    def close(self) -> None:
        if self.owned:
            self.session.stop()
        shutil.rmtree(self._shipped, ignore_errors=True)
