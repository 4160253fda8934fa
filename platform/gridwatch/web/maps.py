"""Map pages and the vendored map assets (Leaflet and plugins), served by the app itself.

The intranet has no internet: every script, stylesheet and image a map needs comes from
``gridwatch.maps``' ``assets/`` directory under ``/maps/assets/``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from flask import Blueprint, send_from_directory
from werkzeug.wrappers import Response

bp = Blueprint("maps", __name__, url_prefix="/maps")

#: How long browsers may keep an asset (they change only with a GridWatch release).
ASSET_MAX_AGE = 24 * 3600


def assets_dir() -> Path:
    """Return the directory of the vendored map assets."""
    return Path(str(resources.files("gridwatch.maps").joinpath("assets")))


@bp.get("/assets/<path:filename>")
def asset(filename: str) -> Response:
    """Serve one vendored asset (404 for anything outside the directory)."""
    return send_from_directory(assets_dir(), filename, max_age=ASSET_MAX_AGE)
