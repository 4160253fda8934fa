"""GridWatch map builders (installed as ``gridwatch.maps``): Folium maps and vendored assets.

The builders arrive with the web and maps issue. ``assets/`` already holds the vendored
Leaflet and Leaflet.heat files with their licences (see ``assets/README.md``), which the web
app serves under ``/maps/assets/`` so that no map ever loads anything from the internet.
"""
