"""Importers for police stations (派出所) and patrol teams (巡逻队 / 巡防队)."""

from __future__ import annotations

import re
from typing import Any, cast

import shapely
from sqlalchemy import Table, select

from gridwatch.ingest.base import Field, Importer, Record
from gridwatch.ingest.errors import RowError
from gridwatch.ingest.parsing import choice_table, is_blank, parse_choice, parse_int, text
from gridwatch.storage.models import Area, PatrolTeam, Station, StationTownship

_SPLIT = re.compile(r"[;,，、；|\s]+")

TEAM_KINDS = choice_table(
    {
        "police": ["公安", "民警", "派出所", "警察", "巡警", "派出所巡逻", "警务"],
        "township": ["乡镇巡防队", "巡防队", "乡镇", "乡镇巡逻队", "街道巡防队"],
        "village": ["村巡防队", "村级", "村", "联防队", "村巡逻队", "社区巡防队", "护村队"],
    }
)


class StationImporter(Importer):
    """Import police stations and the townships each covers."""

    kind = "stations"
    table = cast(Table, Station.__table__)
    key_field = "code"
    key_column = "code"
    has_point = True
    point_required = False
    fields = (
        Field("code", ("派出所编码", "单位代码", "编码", "代码", "station_code", "id"), True),
        Field("name", ("派出所名称", "单位名称", "名称"), True),
        Field("lon", ("经度", "longitude", "lng", "x")),
        Field("lat", ("纬度", "latitude", "y")),
        Field("township_codes", ("辖区乡镇", "管辖乡镇", "辖区", "townships")),
    )

    def prepare(self) -> None:
        """Load area codes (townships must exist) and the grid index."""
        super().prepare()
        self.area_ids = dict(self.session.execute(select(Area.code, Area.id)).all())

    def parse(self, values: dict[str, Any]) -> dict[str, Any]:
        """Validate one station row."""
        townships = [c for c in _SPLIT.split(text(values.get("township_codes"))) if c]
        unknown = [c for c in townships if c not in self.area_ids]
        if unknown:
            raise RowError("township_codes", f"unknown area codes {unknown}")
        return {
            "code": self.required_text(values, "code"),
            "name": self.required_text(values, "name")[:200],
            "_xy": self.point_values(values),
            "_townships": townships,
        }

    def write(self, records: list[Record], batch_id: int) -> int:
        """Insert stations with their township links."""
        for record in records:
            values = record.values
            lon, lat = values.get("lon"), values.get("lat")
            station = Station(
                code=values["code"],
                name=values["name"],
                lon=lon,
                lat=lat,
                geom=None if lon is None else shapely.Point(lon, lat),
                batch_id=batch_id,
            )
            station.townships = [
                StationTownship(area_id=self.area_ids[c]) for c in values["_townships"]
            ]
            self.session.add(station)
        self.session.flush()
        return len(records)


class TeamImporter(Importer):
    """Import patrol teams: police, township patrol teams and village patrol teams."""

    kind = "teams"
    table = cast(Table, PatrolTeam.__table__)
    key_field = "code"
    key_column = "code"
    fields = (
        Field(
            "code", ("队伍编号", "队伍编码", "编号", "代码", "team_id", "team_code", "id"), True
        ),
        Field("name", ("队伍名称", "名称", "team_name"), True),
        Field("kind", ("类型", "队伍类型", "type"), True),
        Field("station_code", ("所属派出所", "派出所编码", "派出所", "station")),
        Field(
            "home_area_code", ("所属区域", "区域编码", "所属乡镇", "所属村", "home_area", "area")
        ),
        Field("members", ("人数", "队员数", "队员人数", "size")),
    )

    def prepare(self) -> None:
        """Load station and area codes for the references."""
        self.station_ids = dict(self.session.execute(select(Station.code, Station.id)).all())
        self.area_ids = dict(self.session.execute(select(Area.code, Area.id)).all())

    def parse(self, values: dict[str, Any]) -> dict[str, Any]:
        """Validate one team row."""
        try:
            kind = parse_choice(values.get("kind"), TEAM_KINDS, "team kind")
        except ValueError as exc:
            raise RowError("kind", str(exc)) from None
        station = text(values.get("station_code")) or None
        if station and station not in self.station_ids:
            raise RowError("station_code", f"unknown police station {station!r}")
        area = text(values.get("home_area_code")) or None
        if area and area not in self.area_ids:
            raise RowError("home_area_code", f"unknown area {area!r}")
        if station is None and area is None:
            raise RowError("station_code", "a team needs a police station or a home area")
        members = None
        if not is_blank(values.get("members")):
            try:
                members = parse_int(values["members"])
            except ValueError as exc:
                raise RowError("members", str(exc)) from None
            if members < 0:
                raise RowError("members", "cannot be negative")
        return {
            "code": self.required_text(values, "code"),
            "name": self.required_text(values, "name")[:200],
            "kind": kind,
            "station_id": self.station_ids.get(station) if station else None,
            "home_area_id": self.area_ids.get(area) if area else None,
            "members": members,
        }

    def to_rows(self, records: list[Record], batch_id: int) -> list[dict[str, Any]]:
        """Build team rows."""
        return [{**r.values, "batch_id": batch_id} for r in records]
