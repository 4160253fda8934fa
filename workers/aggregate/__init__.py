"""Aggregation: plain functions that turn stored rows into per-grid metrics.

Each module computes one family of metrics from plain data (pandas / GeoPandas / NumPy) and
knows nothing of Celery or the web: ``incidents``, ``coverage``, ``patrol``, ``hotspots`` and
``forecast``. :mod:`gridwatch.workers.engine` loads the data, calls them and publishes a run.
"""
