"""GridWatch map builders (installed as ``gridwatch.maps``): Folium maps from plain data.

``builder.build_map`` assembles the main map (incident heat, grid choropleths, patrol dosage,
camera blind spots, Gi* hot spots) from GeoDataFrames and a density raster; ``layers`` and
``heat`` hold the single layers; ``offline`` points every script and stylesheet at the vendored
copies in ``assets/`` (see ``assets/README.md``), which the web app serves under
``/maps/assets/``, so no map ever loads anything from the internet. Nothing here knows Flask or
the database.
"""
