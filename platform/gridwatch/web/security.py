"""Response headers that keep the browser strict: CSP, no sniffing, no framing by others.

The Content Security Policy allows only this site's own scripts and styles and no inline
code. Folium writes its maps as inline scripts; a map will be served as its own document
whose policy adds a per-response nonce (:func:`content_security_policy` with
``script_nonce``), embedded in the pages by ``<iframe src>``, so the pages themselves never
need ``'unsafe-inline'``.
"""

from __future__ import annotations

from collections.abc import Sequence

from flask import request
from werkzeug.wrappers import Response

STATIC_PREFIXES = ("/static/", "/maps/assets/", "/tiles/")


def content_security_policy(
    script_nonce: str | None = None, img_sources: Sequence[str] = ()
) -> str:
    """Return the CSP header value.

    ``script_nonce`` also allows the inline ``<script>`` and ``<style>`` elements bearing it
    (a map document); ``img_sources`` adds origins images may come from (a basemap's tile
    server on another host).
    """
    nonce = f" 'nonce-{script_nonce}'" if script_nonce else ""
    images = " ".join(["'self'", "data:", "blob:", *img_sources])
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self'{nonce}",
            f"style-src 'self'{nonce}",
            f"img-src {images}",
            "font-src 'self'",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'self'",
        ]
    )


def set_security_headers(response: Response) -> Response:
    """Add the security headers to every response (a view may set its own CSP first)."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", content_security_policy())
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "SAMEORIGIN")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if not request.path.startswith(STATIC_PREFIXES):
        # Pages and API answers hold jurisdiction data: never keep them in shared caches.
        headers.setdefault("Cache-Control", "no-store")
    return response
