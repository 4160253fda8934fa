"""Patrol log importer: GPS pings from CSV/XLSX, or GPX tracks (one track per patrol)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

import shapely
from sqlalchemy import Table, select, update

from gridwatch.ingest.base import (
    Field,
    Importer,
    Record,
    Rejection,
    file_sha256,
    insert_ignoring_duplicates,
)
from gridwatch.ingest.errors import RowError
from gridwatch.ingest.parsing import text
from gridwatch.storage.models import PatrolPing, PatrolTeam, PatrolTrack


class PatrolImporter(Importer):
    """Import GPS pings; a GPX file also records each track as a line."""

    kind = "patrols"
    table = cast(Table, PatrolPing.__table__)
    has_point = True
    formats = frozenset({"csv", "xlsx", "gpx"})
    fields = (
        Field("id", ("记录编号", "定位编号", "ping_id", "source_id")),
        Field("team_code", ("队伍编号", "巡逻队", "队伍编码", "team", "team_id"), True),
        Field("ts", ("定位时间", "时间", "采集时间", "timestamp", "time", "datetime"), True),
        Field("lon", ("经度", "longitude", "lng", "long", "x"), True),
        Field("lat", ("纬度", "latitude", "y"), True),
        Field("track", ("轨迹", "track_name")),
    )

    def prepare(self) -> None:
        """Load team codes and the grid index."""
        super().prepare()
        self.team_ids = dict(self.session.execute(select(PatrolTeam.code, PatrolTeam.id)).all())
        self.tracks: dict[str, list[tuple[datetime, float, float, str]]] = defaultdict(list)

    def parse(self, values: dict[str, Any]) -> dict[str, Any]:
        """Validate one ping."""
        team = self.required_text(values, "team_code")
        if self.source.format == "gpx" and "team_code" in self.mapping.constants:
            # GPX track names are free text; a mapping constant names the team instead.
            team = text(self.mapping.constants["team_code"])
        if team not in self.team_ids:
            raise RowError("team_code", f"unknown patrol team {team!r}")
        ts = self.datetime_value(values, "ts", required=True)
        return {
            "team_id": self.team_ids[team],
            "ts": ts,
            "_xy": self.point_values(values),
            "_track": text(values.get("track")) if self.source.format == "gpx" else "",
        }

    def to_rows(self, records: list[Record], batch_id: int) -> list[dict[str, Any]]:
        """Build ping rows, remembering GPX track membership."""
        rows = []
        for record, wkb in zip(records, self.point_wkb(records), strict=True):
            values = dict(record.values)
            track = values.pop("_track", "")
            if track:
                self.tracks[f"{values['team_id']}:{track}"].append(
                    (values["ts"], values["lon"], values["lat"], record.key)
                )
            rows.append({**values, "source_id": record.key, "geom": wkb, "batch_id": batch_id})
        return rows

    def finish(self, batch_id: int, reject: Callable[[Rejection], None]) -> int:
        """Store each GPX track as a line and link its pings to it."""
        if not self.tracks:
            return 0
        digest = file_sha256(self.source.path)[:16]
        for key, points in sorted(self.tracks.items()):
            points.sort()
            team_id = int(key.split(":", 1)[0])
            source_id = f"gpx:{digest}:{key}"
            geom = (
                shapely.LineString([(lon, lat) for _, lon, lat, _ in points])
                if len(points) > 1
                else None
            )
            insert_ignoring_duplicates(
                self.session,
                cast(Table, PatrolTrack.__table__),
                [
                    {
                        "source_id": source_id,
                        "team_id": team_id,
                        "name": key.split(":", 2)[-1] or None,
                        "started_at": points[0][0],
                        "ended_at": points[-1][0],
                        "geom": None if geom is None else shapely.to_wkb(geom),
                        "batch_id": batch_id,
                    }
                ],
            )
            track_id = self.session.scalar(
                select(PatrolTrack.id).where(PatrolTrack.source_id == source_id)
            )
            keys = [p[3] for p in points]
            for start in range(0, len(keys), 500):
                self.session.execute(
                    update(PatrolPing)
                    .where(PatrolPing.source_id.in_(keys[start : start + 500]))
                    .values(track_id=track_id)
                )
        return 0
