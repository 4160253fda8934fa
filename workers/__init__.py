"""GridWatch workers (installed as ``gridwatch.workers``): Celery app, tasks and aggregation.

The aggregation engine arrives with the workers issue; this package exists from the start so
that the layout and packaging are fixed.
"""
