"""GridWatch map builders (installed as ``gridwatch.maps``): Folium maps and vendored assets.

The builders arrive with the web and maps issue; this package exists from the start so that
the layout and packaging are fixed.
"""
