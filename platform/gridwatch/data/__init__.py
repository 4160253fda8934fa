"""Shipped reference data: the category taxonomy and the survey factor list (YAML)."""
