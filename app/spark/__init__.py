"""The Spark adapter (the ``modelmon[spark]`` extra): a lake's predictions folded where they
live by the service's own kernel, in ``mapInArrow``, and uploaded as exact bucket summaries
(docs/scale.md, "Spark")::

    from app.spark import summarize

    summarize(spark.read.parquet("s3://logs/fraud/"), spark.read.parquet("s3://labels/fraud/"),
              url="https://modelmon.internal", token=token, model="fraud", version="v3",
              source="spark:fraud-daily", columns={"timestamp": "event_time"})

A plain Parquet lake folds faster in the file mode (``summarize_parquet``, app/spark/files.py):
Spark hands out the files, and the Python workers read and fold them as `modelmon backfill`
does.
"""

from app.spark.columns import kernel_frame
from app.spark.files import fold_parquet, summarize_parquet
from app.spark.job import Summarized, fold_dataframe, summarize, upload

__all__ = ["Summarized", "fold_dataframe", "fold_parquet", "kernel_frame", "summarize",
           "summarize_parquet", "upload"]
