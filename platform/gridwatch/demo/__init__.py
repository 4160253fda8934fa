"""Synthetic demo data: a fictional county written in every file format GridWatch imports.

:func:`gridwatch.demo.generator.generate_demo` draws the county (示范县, code 439901) from a
seed and writes areas, stations, patrol teams, incidents, cameras, patrol pings, a GPX track
and survey results/responses, each with a handful of deliberately bad rows for the importers'
quarantine. Same seed, scale and ``today`` give byte-identical files.
"""

from gridwatch.demo.generator import BadRow, DemoFiles, generate_demo

__all__ = ["BadRow", "DemoFiles", "generate_demo"]
