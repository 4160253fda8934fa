"""Survey importers: aggregated results per area and wave, and raw responses.

The aggregated file has one row per area and period with ``area_code, period, respondents,
security_pct, satisfaction_pct, composite_score, awareness_pct, participation_pct`` and one
column per dissatisfaction factor (its code, or its Chinese/English name) holding its share
of dissatisfaction in %.
"""

from __future__ import annotations

import re
from typing import Any, cast

from sqlalchemy import Table, select

from gridwatch.config import Settings
from gridwatch.ingest.base import Field, Importer, Record
from gridwatch.ingest.errors import RowError
from gridwatch.ingest.parsing import (
    choice_table,
    is_blank,
    parse_choice,
    parse_float,
    parse_int,
    parse_percent,
    text,
)
from gridwatch.periods import PeriodError, parse_period
from gridwatch.storage.models import Area, SurveyResponse, SurveyResult, SurveyWave
from gridwatch.taxonomy import load_survey_factors

_SPLIT = re.compile(r"[;,，、；|]+")

PERCENT_FIELDS = ("security_pct", "satisfaction_pct", "awareness_pct", "participation_pct")

OUTCOMES = choice_table(
    {
        "completed": ["完成", "成功", "有效", "已完成", "complete", "done"],
        "refused": ["拒访", "拒绝", "拒答", "refusal"],
        "hung_up": ["挂断", "中途挂断", "挂机", "hangup", "hung-up"],
        "no_answer": ["未接通", "无人接听", "空号", "关机", "no-answer", "noanswer"],
    }
)
SECURITY = choice_table(
    {
        "safe": ["安全", "很安全", "非常安全"],
        "basically_safe": ["基本安全", "比较安全", "较安全"],
        "not_very_safe": ["不太安全", "不大安全", "不够安全"],
        "unsafe": ["不安全", "很不安全"],
        "unknown": ["说不清", "不知道", "不清楚", "don't know", "dk"],
    }
)
SATISFACTION = choice_table(
    {
        "satisfied": ["满意", "很满意", "非常满意"],
        "basically_satisfied": ["基本满意", "比较满意"],
        "dissatisfied": ["不满意", "不太满意", "很不满意"],
        "unknown": ["说不清", "不知道", "不清楚", "don't know", "dk"],
    }
)
YES_NO = choice_table(
    {
        "yes": ["是", "知道", "知晓", "参与", "参加过", "有", "y", "true", "1"],
        "no": ["否", "不知道", "不知晓", "未参与", "没有", "无", "n", "false", "0"],
    }
)


class _SurveyBase(Importer):
    """Shared lookups: area codes and survey waves (created on first use)."""

    def prepare(self) -> None:
        """Load area codes and existing waves."""
        self.area_ids = dict(self.session.execute(select(Area.code, Area.id)).all())
        self.wave_ids = dict(self.session.execute(select(SurveyWave.period, SurveyWave.id)).all())

    def area_and_period(self, values: dict[str, Any]) -> tuple[int, str]:
        """Validate ``area_code`` and ``period`` (canonical period label)."""
        area = self.required_text(values, "area_code")
        if area not in self.area_ids:
            raise RowError("area_code", f"unknown area {area!r}")
        raw_period = self.required_text(values, "period")
        try:
            period = parse_period(raw_period).label
        except PeriodError as exc:
            raise RowError("period", str(exc)) from None
        return self.area_ids[area], period

    def to_rows(self, records: list[Record], batch_id: int) -> list[dict[str, Any]]:
        """Build rows for the table, linking each to its wave (created on first use)."""
        rows = []
        for record in records:
            values = dict(record.values)
            period = values.pop("_period")
            rows.append(
                {
                    **values,
                    "wave_id": self.wave_id(period),
                    "source_id": record.key,
                    "batch_id": batch_id,
                }
            )
        return rows

    def wave_id(self, period: str) -> int:
        """Return the wave's id, creating the wave on first use."""
        if period not in self.wave_ids:
            wave = SurveyWave(period=period)
            self.session.add(wave)
            self.session.flush()
            self.wave_ids[period] = wave.id
        return self.wave_ids[period]


class SurveyResultImporter(_SurveyBase):
    """Import aggregated survey results (``gridwatch import surveys``)."""

    kind = "surveys"
    table = cast(Table, SurveyResult.__table__)
    key_field = None
    base_fields = (
        Field(
            "area_code", ("区划代码", "地区编码", "行政区划代码", "区域编码", "编码", "code"), True
        ),
        Field("period", ("测评期", "期别", "季度", "测评季度", "wave", "quarter"), True),
        Field("respondents", ("样本量", "有效样本", "受访人数", "样本数", "n")),
        Field("security_pct", ("单项安全感", "安全感", "安全感率", "security")),
        Field("satisfaction_pct", ("满意度", "政法满意度", "satisfaction")),
        Field("composite_score", ("综合得分", "得分", "score")),
        Field("awareness_pct", ("知晓率", "awareness")),
        Field("participation_pct", ("参与率", "participation")),
    )
    fields = base_fields

    @classmethod
    def all_fields(cls, settings: Settings) -> tuple[Field, ...]:
        """Return the fixed fields plus one per configured dissatisfaction factor."""
        factors = load_survey_factors(settings.survey_factors_file)
        return cls.base_fields + tuple(
            Field(f"factor:{f.code}", (f.code, f.zh, f.en)) for f in factors.values()
        )

    def parse(self, values: dict[str, Any]) -> dict[str, Any]:
        """Validate one area × wave row."""
        area_id, period = self.area_and_period(values)
        out: dict[str, Any] = {"area_id": area_id, "_period": period}
        for name in PERCENT_FIELDS:
            value = values.get(name)
            try:
                out[name] = None if is_blank(value) else parse_percent(value)
            except ValueError as exc:
                raise RowError(name, str(exc)) from None
        respondents = values.get("respondents")
        try:
            out["respondents"] = None if is_blank(respondents) else parse_int(respondents)
        except ValueError as exc:
            raise RowError("respondents", str(exc)) from None
        if out["respondents"] is not None and out["respondents"] < 0:
            raise RowError("respondents", "cannot be negative")
        out["composite_score"] = self.float_value(values, "composite_score", 0, 100)
        shares: dict[str, float] = {}
        for name, value in values.items():
            if name.startswith("factor:") and not is_blank(value):
                try:
                    shares[name[len("factor:") :]] = parse_percent(value)
                except ValueError as exc:
                    raise RowError(name[len("factor:") :], str(exc)) from None
        out["factor_shares"] = shares
        out["_key"] = f"{period}:{text(values.get('area_code'))}"
        return out


class SurveyResponseImporter(_SurveyBase):
    """Import raw survey responses (``gridwatch import survey-responses``)."""

    kind = "survey-responses"
    table = cast(Table, SurveyResponse.__table__)
    key_field = None
    fields = (
        Field("respondent_id", ("受访者编号", "样本编号", "问卷编号", "编号", "respondent"), True),
        Field("period", ("测评期", "期别", "季度", "wave", "quarter"), True),
        Field("area_code", ("区划代码", "地区编码", "村编码", "区域编码", "code"), True),
        Field("outcome", ("访问结果", "结果", "访问状态")),
        Field("security", ("安全感", "安全感评价", "您觉得安全吗")),
        Field("satisfaction", ("满意度", "满意度评价")),
        Field("aware", ("知晓综治", "是否知晓", "知晓")),
        Field("participated", ("是否参与", "参与平安建设", "参与")),
        Field("factors", ("不安全因素", "不满意因素", "原因", "factor_codes")),
        Field("weight", ("权重", "设计权重", "w")),
    )

    def prepare(self) -> None:
        """Load lookups and the factor list."""
        super().prepare()
        factors = load_survey_factors(self.settings.survey_factors_file)
        self.factor_codes = choice_table({f.code: [f.zh, f.en] for f in factors.values()})

    def _choice(self, values: dict[str, Any], name: str, table: dict[str, str]) -> str | None:
        if is_blank(values.get(name)):
            return None
        try:
            return parse_choice(values[name], table, name.replace("_", " "))
        except ValueError as exc:
            raise RowError(name, str(exc)) from None

    def parse(self, values: dict[str, Any]) -> dict[str, Any]:
        """Validate one respondent's answers."""
        respondent = self.required_text(values, "respondent_id")
        area_id, period = self.area_and_period(values)
        outcome = self._choice(values, "outcome", OUTCOMES) or "completed"
        answers = {
            "security": self._choice(values, "security", SECURITY),
            "satisfaction": self._choice(values, "satisfaction", SATISFACTION),
            "aware": self._choice(values, "aware", YES_NO),
            "participated": self._choice(values, "participated", YES_NO),
        }
        if outcome == "completed" and answers["security"] is None:
            raise RowError("security", "a completed interview needs the security answer")
        factors = []
        for part in _SPLIT.split(text(values.get("factors"))):
            part = part.strip()
            if not part:
                continue
            code = self.factor_codes.get(part.casefold().replace(" ", "_"))
            if code is None:
                raise RowError("factors", f"{part!r} is not a known dissatisfaction factor")
            if code not in factors:
                factors.append(code)
        weight = None
        if not is_blank(values.get("weight")):
            try:
                weight = parse_float(values["weight"])
            except ValueError as exc:
                raise RowError("weight", str(exc)) from None
            if weight <= 0:
                raise RowError("weight", "a design weight must be positive")
        return {
            "respondent": respondent[:128],
            "area_id": area_id,
            "outcome": outcome,
            "answers": {k: v for k, v in answers.items() if v is not None},
            "factors": factors,
            "weight": weight,
            "_period": period,
            "_key": f"{period}:{respondent}",
        }
