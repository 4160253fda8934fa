"""Self-checks of the synthetic benchmark city (``bench/city.py``) at a small size."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from sqlalchemy import func, select

from gridwatch.storage import create_db_engine
from gridwatch.storage.models import (
    CAMERA_STATUSES,
    CAMERA_TYPES,
    INCIDENT_SOURCES,
    INCIDENT_STATUSES,
    Area,
    Camera,
    Incident,
    PatrolPing,
    PatrolTeam,
)
from gridwatch.taxonomy import load_taxonomy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from city import City, city_database, city_frames, city_marker, load_city  # noqa: E402

SIZES = {"grids": 60, "incidents": 5000, "cameras": 300, "patrol_hours": 200}
TODAY = date(2026, 11, 22)


@pytest.fixture(scope="module")
def city() -> City:
    return city_frames(3, **SIZES, today=TODAY)


def level(city: City, name: str):
    return city.areas[city.areas["level"] == name].reset_index(drop=True)


def test_grids_tile_the_county(city):
    grids = np.asarray(city.grids.geometry.values)
    county = level(city, "county").geometry.iloc[0]
    assert len(grids) == SIZES["grids"]
    assert shapely.is_valid(grids).all()
    # neighbours share their edges vertex for vertex: no gaps, no overlaps
    assert shapely.coverage_is_valid(grids)
    assert county.geom_type == "Polygon" and not county.interiors
    assert shapely.area(grids).sum() == pytest.approx(county.area, rel=1e-12)
    first, second = shapely.STRtree(grids).query(grids, predicate="intersects")
    pairs = first < second
    overlap = shapely.area(shapely.intersection(grids[first[pairs]], grids[second[pairs]]))
    assert overlap.max() < 1e-15 * county.area
    minx, miny, maxx, maxy = county.bounds
    assert 116.5 < minx < maxx < 117.5 and 30.5 < miny < maxy < 31.5


def test_grids_are_irregular_with_many_vertices(city):
    vertices = shapely.get_num_coordinates(np.asarray(city.grids.geometry.values))
    assert vertices.min() >= 60
    assert 90 <= vertices.mean() <= 130


def test_parents_are_unions_of_children(city):
    areas = city.areas.set_index("code")
    assert list(city.areas["level"].unique()) == ["county", "township", "village", "grid"]
    for child_level, prefix in (("township", 6), ("village", 9), ("grid", 12)):
        children = level(city, child_level)
        assert children["parent_code"].isin(areas.index).all()
        for parent_code, group in children.groupby("parent_code"):
            parent = areas.at[parent_code, "geometry"]
            union = shapely.coverage_union_all(np.asarray(group.geometry.values))
            assert shapely.symmetric_difference(parent, union).area < 1e-12 * parent.area
            assert group["code"].str.startswith(parent_code[:prefix]).all()
            assert group["population"].sum() == areas.at[parent_code, "population"]
    assert city.areas["code"].is_unique
    assert (level(city, "grid")["code"].str.len() == 15).all()


def test_every_incident_lies_in_its_grid(city):
    incidents = city.incidents
    grids = np.asarray(city.grids.geometry.values)
    assert len(incidents) == SIZES["incidents"]
    assert (incidents["grid_index"] >= 0).all()
    points = shapely.points(incidents["lon"], incidents["lat"])
    assert shapely.contains(grids[incidents["grid_index"]], points).all()
    counts = np.bincount(incidents["grid_index"], minlength=len(grids))
    assert counts.max() > 5 * np.median(counts)  # clustered, not uniform


def test_incident_attributes(city):
    incidents = city.incidents
    assert set(incidents["category"].cat.categories) == set(load_taxonomy().categories)
    assert set(incidents["source"].astype(str)) <= set(INCIDENT_SOURCES)
    assert incidents["source"].astype(str).value_counts(normalize=True)["patrol"] < 0.3
    assert set(incidents["status"]) == set(INCIDENT_STATUSES)
    solved = incidents["status"].isin(["solved", "closed"])
    assert solved.eq(incidents["solved_at"].notna()).all()
    assert (solved & incidents["victim_notified_at"].isna()).any()
    assert (solved & incidents["victim_notified_at"].notna()).any()
    local = incidents["occurred_at"].dt.tz_convert("Asia/Shanghai")
    assert local.dt.date.min() >= date(2024, 11, 22)
    assert local.dt.date.max() < TODAY
    night = (local.dt.hour >= 20) | (local.dt.hour < 6)
    assert night.mean() > 10 / 24  # night-heavy
    assert (incidents["reported_at"] >= incidents["occurred_at"]).all()
    assert incidents["source_id"].is_unique


def test_cameras_and_pings(city):
    cameras = city.cameras
    assert len(cameras) == SIZES["cameras"]
    assert set(cameras["type"]) <= set(CAMERA_TYPES)
    assert set(cameras["status"]) <= set(CAMERA_STATUSES)
    assert (cameras["status"] == "online").mean() > 0.7
    assert cameras["direction_deg"].isna().any() and cameras["direction_deg"].notna().any()
    assert (cameras["grid_index"] >= 0).all()

    pings = city.pings
    assert (~city.teams["active"]).any()
    assert set(pings["team_code"].astype(str)) <= set(city.teams.loc[city.teams["active"], "code"])
    ordered = pings.sort_values(["team_code", "ts"], kind="stable")
    assert ordered.index.equals(pings.index)
    steps = pings.groupby("team_code", observed=True)["ts"].diff().dropna()
    assert steps.mode().iloc[0] == pd.Timedelta(minutes=2)
    hours = len(pings) * 2 / 60
    assert hours == pytest.approx(SIZES["patrol_hours"], rel=0.1)


def test_load_city_round_trips(tmp_path, city):
    engine = create_db_engine(f"sqlite:///{tmp_path / 'city.db'}")
    try:
        counts = load_city(engine, city)
        assert counts["incidents"] == len(city.incidents)
        with engine.connect() as conn:

            def rows(model):
                return conn.scalar(select(func.count()).select_from(model))

            assert rows(Area) == len(city.areas)
            assert rows(Incident) == len(city.incidents)
            assert rows(Camera) == len(city.cameras)
            assert rows(PatrolPing) == len(city.pings)
            assert rows(PatrolTeam) == len(city.teams)
            grid = Area.__table__.alias("grid")
            stored = conn.execute(
                select(Incident.source_id, grid.c.code, Incident.occurred_at)
                .join(grid, grid.c.id == Incident.grid_id)
                .order_by(Incident.source_id)
            ).all()
            parentless = conn.scalar(
                select(func.count()).select_from(Area).where(Area.parent_id.is_(None))
            )
        assert parentless == 1
        expected = city.grids["code"].to_numpy()[city.incidents["grid_index"]]
        assert [r.code for r in stored] == expected.tolist()
        assert [r.source_id for r in stored] == city.incidents["source_id"].tolist()
        assert stored[0].occurred_at == city.incidents["occurred_at"].iloc[0].to_pydatetime()
        with pytest.raises(ValueError, match="without areas"):
            load_city(engine, city)
    finally:
        engine.dispose()


def test_city_database_is_built_once(tmp_path):
    path = tmp_path / "city.db"
    small = {"grids": 20, "incidents": 500, "cameras": 50, "patrol_hours": 20}
    assert city_database(path, seed=1, today=TODAY, **small) == path
    built_at = city_marker(path)["built_at"]
    stamp = path.stat().st_mtime_ns
    assert city_database(path, seed=1, **small) == path  # reused on any day
    assert path.stat().st_mtime_ns == stamp
    city_database(path, seed=1, today=TODAY, **{**small, "incidents": 600})
    marker = city_marker(path)
    assert marker["incidents"] == 600 and marker["rows"]["incidents"] == 600
    assert marker["built_at"] >= built_at
