"""Camera importer (雪亮工程 points): CSV or XLSX, English or Chinese headers."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table

from gridwatch.ingest.base import Field, Importer, Record
from gridwatch.ingest.errors import RowError
from gridwatch.ingest.parsing import choice_table, is_blank, parse_choice, text
from gridwatch.storage.models import Camera

CAMERA_TYPES = choice_table(
    {
        "checkpoint": ["卡口", "治安卡口", "卡口摄像机", "公安卡口", "anpr"],
        "hd": ["高清", "高清摄像机", "高清探头", "高清点位", "high-definition"],
        "standard": ["标清", "普通", "标清摄像机", "sd", "cctv", "标准"],
        "private": ["社会联网", "社会面", "民用", "私人", "private-linked", "private_linked"],
    }
)
CAMERA_STATUSES = choice_table(
    {
        "online": ["在线", "正常", "ok", "working", "active"],
        "offline": ["离线", "掉线", "inactive"],
        "broken": ["故障", "损坏", "坏", "维修", "faulty", "damaged"],
    }
)


class CameraImporter(Importer):
    """Import cameras with their optional view direction, angle and range."""

    kind = "cameras"
    table = cast(Table, Camera.__table__)
    has_point = True
    fields = (
        Field("id", ("点位编号", "摄像机编号", "设备编号", "编号", "camera_id", "source_id")),
        Field("name", ("点位名称", "设备名称", "名称", "安装位置")),
        Field("lon", ("经度", "longitude", "lng", "long", "x"), True),
        Field("lat", ("纬度", "latitude", "y"), True),
        Field("type", ("类型", "点位类型", "摄像机类型", "camera_type")),
        Field("status", ("状态", "在线状态", "设备状态")),
        Field("resolution", ("分辨率", "像素")),
        Field("direction_deg", ("朝向", "方向", "方位角", "direction", "bearing")),
        Field("fov_deg", ("视场角", "视角", "fov")),
        Field("range_m", ("监控距离", "可视距离", "覆盖半径", "range")),
        Field("installed_at", ("建设时间", "安装时间", "启用时间", "installed")),
        Field("owner", ("建设单位", "权属单位", "所属单位", "维护单位")),
    )

    def parse(self, values: dict[str, Any]) -> dict[str, Any]:
        """Validate one camera row."""
        try:
            camera_type = (
                "standard"
                if is_blank(values.get("type"))
                else parse_choice(values["type"], CAMERA_TYPES, "camera type")
            )
        except ValueError as exc:
            raise RowError("type", str(exc)) from None
        try:
            status = (
                "online"
                if is_blank(values.get("status"))
                else parse_choice(values["status"], CAMERA_STATUSES, "camera status")
            )
        except ValueError as exc:
            raise RowError("status", str(exc)) from None
        direction = self.float_value(values, "direction_deg", 0, 360)
        return {
            "name": text(values.get("name"))[:200] or None,
            "_xy": self.point_values(values),
            "type": camera_type,
            "status": status,
            "resolution": text(values.get("resolution"))[:32] or None,
            "direction_deg": None if direction is None else direction % 360,
            "fov_deg": self.float_value(values, "fov_deg", 1, 360),
            "range_m": self.float_value(values, "range_m", 1, 2000),
            "installed_at": self.datetime_value(values, "installed_at"),
            "owner": text(values.get("owner"))[:200] or None,
        }

    def to_rows(self, records: list[Record], batch_id: int) -> list[dict[str, Any]]:
        """Build camera rows."""
        return [
            {**r.values, "source_id": r.key, "geom": wkb, "batch_id": batch_id}
            for r, wkb in zip(records, self.point_wkb(records), strict=True)
        ]
