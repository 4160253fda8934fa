"""Incident importer (警情 / 案件): CSV or XLSX, English or Chinese headers."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table

from gridwatch.ingest.base import Field, Importer, Record
from gridwatch.ingest.errors import RowError
from gridwatch.ingest.parsing import choice_table, is_blank, parse_choice, text
from gridwatch.storage.models import Incident
from gridwatch.taxonomy import load_taxonomy

SOURCES = choice_table(
    {
        "call_110": ["110", "110报警", "电话报警", "报警", "110接警", "call", "911", "phone"],
        "walk_in": ["来所报案", "报案", "来访", "当面报案", "走访报案", "walk-in", "walkin"],
        "patrol": [
            "巡逻发现",
            "巡逻",
            "主动发现",
            "巡查发现",
            "patrol-discovered",
            "patrol_found",
        ],
        "other": ["其他", "其它"],
    }
)
STATUSES = choice_table(
    {
        "reported": ["已报警", "报警", "接警", "未受理", "待受理", "new", "open"],
        "accepted": ["已受理", "受理", "立案", "已立案", "侦查中", "在办", "办理中"],
        "solved": ["已破案", "破案", "已侦破", "cleared"],
        "closed": ["已结案", "结案", "已办结", "办结", "已处置", "处置完毕"],
    }
)


class IncidentImporter(Importer):
    """Import incidents; points are joined to grids, categories resolved via the taxonomy."""

    kind = "incidents"
    table = cast(Table, Incident.__table__)
    has_point = True
    fields = (
        Field(
            "id", ("警情编号", "案件编号", "警情号", "编号", "source_id", "incident_id", "case_id")
        ),
        Field(
            "occurred_at", ("发案时间", "案发时间", "发生时间", "时间", "occurred", "date"), True
        ),
        Field("reported_at", ("报警时间", "接警时间", "报案时间", "reported")),
        Field("category", ("案件类别", "警情类别", "类别", "案由", "警情类型", "type"), True),
        Field("lon", ("经度", "longitude", "lng", "long", "x"), True),
        Field("lat", ("纬度", "latitude", "y"), True),
        Field("address", ("发案地址", "地址", "发案地点", "地点", "location")),
        Field("source", ("警情来源", "来源", "报警方式", "接警方式")),
        Field("status", ("办理状态", "案件状态", "状态")),
        Field("solved_at", ("破案时间", "侦破时间", "solved")),
        Field("victim_notified_at", ("回访时间", "告知时间", "反馈时间", "通知时间")),
        Field("description", ("简要案情", "案情", "警情内容", "描述", "备注", "notes")),
    )

    def prepare(self) -> None:
        """Load the grid index and the category taxonomy."""
        super().prepare()
        self.taxonomy = load_taxonomy(self.settings.categories_file)

    def parse(self, values: dict[str, Any]) -> dict[str, Any]:
        """Validate one incident row."""
        occurred = self.datetime_value(values, "occurred_at", required=True)
        assert occurred is not None
        raw_category = values.get("category")
        if is_blank(raw_category):
            raise RowError("category", "required value is missing")
        category = self.taxonomy.resolve(raw_category)
        if category is None:
            raise RowError(
                "category",
                f"{text(raw_category)!r} is not a known category "
                "(use a code, Chinese or English name, or map it in --mapping)",
            )
        try:
            source = (
                "other"
                if is_blank(values.get("source"))
                else parse_choice(values["source"], SOURCES, "incident source")
            )
            status = (
                "reported"
                if is_blank(values.get("status"))
                else parse_choice(values["status"], STATUSES, "status")
            )
        except ValueError as exc:
            column = "source" if "source" in str(exc) else "status"
            raise RowError(column, str(exc)) from None
        solved = self.datetime_value(values, "solved_at")
        notified = self.datetime_value(values, "victim_notified_at")
        reported = self.datetime_value(values, "reported_at")
        if solved is not None and solved < occurred:
            raise RowError("solved_at", "solved before the incident occurred")
        if notified is not None and notified < occurred:
            raise RowError("victim_notified_at", "victim notified before the incident occurred")
        return {
            "occurred_at": occurred,
            "reported_at": reported,
            "category": category,
            "_xy": self.point_values(values),
            "address": text(values.get("address"))[:500] or None,
            "source": source,
            "status": status,
            "solved_at": solved,
            "victim_notified_at": notified,
            "description": text(values.get("description")) or None,
        }

    def to_rows(self, records: list[Record], batch_id: int) -> list[dict[str, Any]]:
        """Build incident rows."""
        return [
            {**r.values, "source_id": r.key, "geom": wkb, "batch_id": batch_id}
            for r, wkb in zip(records, self.point_wkb(records), strict=True)
        ]
