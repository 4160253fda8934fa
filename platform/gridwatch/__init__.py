"""GridWatch: grid-based incident and prevention monitoring for local public-safety work.

Data flows one way: files → :mod:`gridwatch.ingest` → :mod:`gridwatch.storage` →
:mod:`gridwatch.workers` → :mod:`gridwatch.maps` / targeting → web and CLI.
"""

__version__ = "0.1.0"
