"""Coordinate handling: Chinese map offsets (GCJ-02, BD-09) and projected systems to WGS84."""
