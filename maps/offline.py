"""Point a Folium map at the vendored assets instead of the CDNs Folium links by default.

Folium's elements name their scripts and stylesheets in ``default_js`` / ``default_css`` as
``(name, url)`` pairs pointing at public CDN hosts. The intranet reaches none
of them, so :func:`use_local_assets` rewrites every pair in a map's tree to a file under
``assets/`` (served by the web app under ``/maps/assets/``), drops the ones our maps never
use, and refuses a name it does not know, so a new plugin cannot quietly load from the
internet. :func:`render_html` renders the document and checks its script and stylesheet links.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import folium
from branca.element import Element

#: Folium asset name → file under ``assets/``.
VENDORED: dict[str, str] = {
    "leaflet": "leaflet/leaflet.js",
    "leaflet_css": "leaflet/leaflet.css",
    "leaflet-heat.js": "leaflet-heat/leaflet-heat.js",
    "markerclusterjs": "leaflet-markercluster/leaflet.markercluster.js",
    "markerclustercss": "leaflet-markercluster/MarkerCluster.css",
    "markerclusterdefaultcss": "leaflet-markercluster/MarkerCluster.Default.css",
}

#: Assets Folium's map always asks for that our maps do not use: markers with icons
#: (awesome-markers, Font Awesome), Bootstrap, and jQuery (Folium's own popups; ours are
#: built by ``gridwatch/gridwatch-map.js``).
UNUSED: frozenset[str] = frozenset(
    {
        "jquery",
        "bootstrap",
        "bootstrap_css",
        "glyphicons_css",
        "awesome_markers",
        "awesome_markers_css",
        "awesome_markers_font_css",
        "awesome_rotate_css",
    }
)

#: GridWatch's own helpers, added to every map after Leaflet.
OWN_JS = ("gridwatch_map", "gridwatch/gridwatch-map.js")
OWN_CSS = ("gridwatch_map_css", "gridwatch/gridwatch-map.css")

AssetUrl = Callable[[str], str]


class ExternalAssetError(ValueError):
    """A map element needs a script or stylesheet that is not vendored under ``assets/``."""


def default_asset_url(path: str) -> str:
    """Return the URL of a vendored file as the web app serves it."""
    return "/maps/assets/" + path


def walk(element: Element) -> Iterator[Element]:
    """Yield ``element`` and every element below it."""
    yield element
    for child in list(element._children.values()):
        yield from walk(child)


def _local(pairs: list[tuple[str, str]], asset_url: AssetUrl) -> list[tuple[str, str]]:
    out = []
    for name, url in pairs:
        if name in UNUSED:
            continue
        if name not in VENDORED:
            raise ExternalAssetError(f"no vendored copy of {name!r} ({url}); add it to assets/")
        out.append((name, asset_url(VENDORED[name])))
    return out


def use_local_assets(fmap: folium.Map, asset_url: AssetUrl = default_asset_url) -> None:
    """Rewrite the scripts and stylesheets of every element of ``fmap`` to vendored files.

    Raises
    ------
    ExternalAssetError
        When an element needs an asset that is not vendored.
    """
    for element in walk(fmap):
        for attribute in ("default_js", "default_css"):
            pairs = getattr(element, attribute, None)
            if pairs:
                # An instance attribute: the class lists stay as Folium ships them.
                setattr(element, attribute, _local(list(pairs), asset_url))
    if OWN_JS[0] not in dict(fmap.default_js):
        fmap.default_js = [*fmap.default_js, (OWN_JS[0], asset_url(OWN_JS[1]))]
        fmap.default_css = [*fmap.default_css, (OWN_CSS[0], asset_url(OWN_CSS[1]))]


_ASSET_LINK = re.compile(r"<(?:script|link)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']+)", re.I)


def asset_links(html: str) -> list[str]:
    """Return the ``src`` / ``href`` of every ``<script>`` and ``<link>`` tag in ``html``."""
    return _ASSET_LINK.findall(html)


def render_html(fmap: folium.Map, asset_url: AssetUrl = default_asset_url) -> str:
    """Render ``fmap`` as a complete HTML document that loads only vendored assets.

    Raises
    ------
    ExternalAssetError
        When a script or stylesheet would still come from another host.
    """
    use_local_assets(fmap, asset_url)
    html: str = fmap.get_root().render()
    remote = [url for url in asset_links(html) if re.match(r"(?i)(https?:)?//", url)]
    if remote:
        raise ExternalAssetError(f"the map still links remote assets: {remote}")
    return html


__all__ = [
    "OWN_CSS",
    "OWN_JS",
    "UNUSED",
    "VENDORED",
    "ExternalAssetError",
    "asset_links",
    "default_asset_url",
    "render_html",
    "use_local_assets",
    "walk",
]
