"""Take the README's screenshots (overview, map, command screen) of the demo county.

Build the demo first (``make demo DEMO_ARGS=--no-serve`` fills ``var/``), then::

    .venv/bin/python docs/img/screenshots.py [--var var] [--out docs/img]

The demo database is copied to a temporary directory (a ``county`` user is added to the
copy), served on a free loopback port and photographed in headless ``/usr/bin/chromium``
(``fonts-noto-cjk`` installed, or Chinese shows as boxes). Requests that would leave
127.0.0.1 are refused and make the script fail. ``pngquant``, when installed, reduces the
pictures to 256 colours so each stays well under 300 KB.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
USER, PASSWORD = "zhangwei", "demo password 42"
MAX_BYTES = 300_000


def last_quarter(today: Any) -> str:
    """Return the label of the last complete quarter before ``today``."""
    quarter = (today.month - 1) // 3
    return f"{today.year}Q{quarter}" if quarter else f"{today.year - 1}Q4"


def shrink(path: Path) -> None:
    """Quantise ``path`` to 256 colours in place with ``pngquant`` (when it is installed)."""
    if shutil.which("pngquant"):
        subprocess.run(
            ["pngquant", "--force", "--skip-if-larger", "--output", str(path), "256", str(path)],
            check=False,
        )


def take(var_dir: Path, out: Path) -> list[Path]:
    """Serve a copy of the demo database in ``var_dir`` and save the three screenshots."""
    from datetime import date

    from playwright.sync_api import sync_playwright
    from sqlalchemy import select
    from werkzeug.serving import make_server

    from gridwatch.accounts import create_user
    from gridwatch.config import load_settings
    from gridwatch.storage import create_db_engine
    from gridwatch.storage.db import session_scope
    from gridwatch.storage.models import Area
    from gridwatch.web import create_app

    database = var_dir / "gridwatch.db"
    if not database.exists():
        raise SystemExit(f"{database} does not exist: run `make demo DEMO_ARGS=--no-serve` first")
    with tempfile.TemporaryDirectory(prefix="gw-screenshots-") as scratch:
        copy_dir = Path(scratch) / "var"
        copy_dir.mkdir()
        shutil.copyfile(database, copy_dir / database.name)
        settings = load_settings(
            {
                "GRIDWATCH_VAR_DIR": str(copy_dir),
                "GRIDWATCH_DATABASE_URL": f"sqlite:///{copy_dir / database.name}",
                "GRIDWATCH_SECRET_KEY": "screenshots-secret-key-0123456789",
                "GRIDWATCH_SECURE_COOKIES": "false",  # plain HTTP on loopback
            }
        )
        engine = create_db_engine(settings.database_url)
        with session_scope(engine) as session:
            county = session.scalar(select(Area.code).where(Area.level == "county"))
        create_user(engine, USER, "county", PASSWORD, county)
        app = create_app({"GRIDWATCH_SETTINGS": settings, "GRIDWATCH_ENGINE": engine})
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{server.server_port}"
        period = last_quarter(date.today())
        refused: list[str] = []
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                context = browser.new_context(
                    locale="zh-CN",
                    timezone_id=settings.timezone.key,
                    viewport={"width": 1600, "height": 1000},
                )
                context.set_default_timeout(120_000)

                def guard(route: Any) -> None:
                    url = route.request.url
                    if urlsplit(url).hostname == "127.0.0.1" or url.startswith("data:"):
                        route.continue_()
                    else:
                        refused.append(url)
                        route.abort()

                context.route("**/*", guard)
                page = context.new_page()
                page.goto(base + "/auth/login")
                page.fill("#username", USER)
                page.fill("#password", PASSWORD)
                with page.expect_navigation():
                    page.click(".login-card button[type=submit]")
                page.wait_for_timeout(500)
                page.screenshot(path=str(out / "overview.png"))
                page.goto(f"{base}/map?period={period}&layers=heat,hotspots")
                frame = page.wait_for_selector("iframe.map-frame").content_frame()
                assert frame is not None
                frame.wait_for_selector(".leaflet-overlay-pane img, .leaflet-overlay-pane canvas")
                page.wait_for_timeout(2000)
                page.screenshot(path=str(out / "map.png"))
                wall = context.new_page()
                wall.set_viewport_size({"width": 1920, "height": 1080})
                wall.goto(base + "/screen")
                frame = wall.wait_for_selector(".map-stack iframe.active").content_frame()
                assert frame is not None
                frame.wait_for_selector(".leaflet-overlay-pane canvas, .leaflet-overlay-pane svg")
                wall.wait_for_timeout(2000)
                wall.screenshot(path=str(out / "screen.png"))
                browser.close()
        finally:
            server.shutdown()
            thread.join(timeout=10)
            engine.dispose()
    if refused:
        raise SystemExit(f"requests left 127.0.0.1: {refused}")
    shots = [out / name for name in ("overview.png", "map.png", "screen.png")]
    for shot in shots:
        shrink(shot)
    return shots


def main(argv: list[str] | None = None) -> int:
    """Take the screenshots; return the exit status (1 when one is too large)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--var", type=Path, default=Path("var"), help="the demo's var/ folder")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    status = 0
    for shot in take(args.var, args.out):
        size = shot.stat().st_size
        print(f"{shot}: {size / 1000:.0f} KB")
        if size > MAX_BYTES:
            print(f"  larger than {MAX_BYTES // 1000} KB", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
