"""GridWatch map builders (installed as ``gridwatch.maps``): Folium maps from plain data.

``builder.build_map`` assembles the main map (incident heat, heat by week with a time slider,
grid choropleths, patrol dosage, patrol tracks, camera blind spots, Gi* hot spots, cameras)
from GeoDataFrames, frames and a density raster; ``layers``, ``heat``, ``cameras`` and
``tracks`` hold the single layers; ``offline`` points every script and stylesheet at the vendored
copies in ``assets/`` (see ``assets/README.md``), which the web app serves under
``/maps/assets/``, so no map ever loads anything from the internet. Nothing here knows Flask or
the database.
"""
