"""Importers: read real-world files, validate every row, quarantine rejects, commit the rest."""
