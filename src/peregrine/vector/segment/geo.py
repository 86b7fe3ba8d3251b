"""Geo conditions (Qdrant's ``geo_radius``, ``geo_bounding_box`` and
``geo_polygon``) as vectorised tests over a field's geo points.

A geo point is a payload object ``{"lon": x, "lat": y}`` (or an array of them).
Distances are great-circle (haversine) on the mean Earth radius, in metres; a
bounding box runs from its top-left to its bottom-right corner; a polygon is
closed (first point = last), at least 4 points, and its interior rings cut holes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

from peregrine.core.deadline import check_deadline
from peregrine.vector.errors import InvalidFilterError
from peregrine.vector.segment.payload_index import F64, Mask

EARTH_RADIUS_M = 6_371_008.8
MAX_POLYGON_POINTS = 10_000

Inside = Callable[[F64, F64], Mask]


def _point(obj: Any, where: str) -> tuple[float, float]:
    if not isinstance(obj, dict) or set(obj) - {"lon", "lat"} or len(obj) != 2:
        raise InvalidFilterError(f"{where} must be {{\"lon\": x, \"lat\": y}}")
    lon, lat = obj["lon"], obj["lat"]
    for name, v, limit in (("lon", lon, 180), ("lat", lat, 90)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not -limit <= v <= limit:
            raise InvalidFilterError(f"{where}.{name} must be a number in "
                                     f"[-{limit}, {limit}]")
    return float(lon), float(lat)


def radius(arg: Any, where: str) -> Inside:
    if not isinstance(arg, dict) or set(arg) != {"center", "radius"}:
        raise InvalidFilterError(f"{where} needs 'center' and 'radius' (metres)")
    lon0, lat0 = _point(arg["center"], f"{where}.center")
    r = arg["radius"]
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not r >= 0:
        raise InvalidFilterError(f"{where}.radius must be a non-negative number of metres")
    phi0, lam0 = np.radians(lat0), np.radians(lon0)

    def inside(lons: F64, lats: F64) -> Mask:
        phi, lam = np.radians(lats), np.radians(lons)
        h = (np.sin((phi - phi0) / 2) ** 2
             + np.cos(phi0) * np.cos(phi) * np.sin((lam - lam0) / 2) ** 2)
        return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(h, 1.0))) <= r)

    return inside


def bounding_box(arg: Any, where: str) -> Inside:
    if not isinstance(arg, dict) or set(arg) != {"top_left", "bottom_right"}:
        raise InvalidFilterError(f"{where} needs 'top_left' and 'bottom_right'")
    left, top = _point(arg["top_left"], f"{where}.top_left")
    right, bottom = _point(arg["bottom_right"], f"{where}.bottom_right")

    def inside(lons: F64, lats: F64) -> Mask:
        in_lat = (lats <= top) & (lats >= bottom)
        in_lon = (lons >= left) & (lons <= right) if left <= right else \
            (lons >= left) | (lons <= right)  # across the antimeridian
        return np.asarray(in_lat & in_lon)

    return inside


def _ring(obj: Any, where: str) -> F64:
    if not isinstance(obj, dict) or not isinstance(obj.get("points"), list):
        raise InvalidFilterError(f"{where} needs 'points', a list of geo points")
    points = obj["points"]
    if len(points) > MAX_POLYGON_POINTS:
        raise InvalidFilterError(f"{where} has more than {MAX_POLYGON_POINTS} points")
    ring = np.asarray([_point(p, f"{where}.points[{i}]") for i, p in enumerate(points)])
    if len(ring) < 4 or not np.array_equal(ring[0], ring[-1]):
        raise InvalidFilterError(f"{where} must be closed (first point = last) and have "
                                 "at least 4 points")
    return ring


def _in_ring(ring: F64, lons: F64, lats: F64) -> Mask:
    """Even-odd rule: a horizontal ray from each point crosses the ring's edges an
    odd number of times when the point is inside."""
    inside = np.zeros(lons.shape, dtype=np.bool_)
    for (x1, y1), (x2, y2) in itertools.pairwise(ring.tolist()):
        check_deadline()  # an edge costs one pass over the points
        crosses = (y1 > lats) != (y2 > lats)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x1 + (lats - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (lons < x_at)
    return inside


def polygon(arg: Any, where: str) -> Inside:
    if not isinstance(arg, dict) or "exterior" not in arg or set(arg) - {"exterior",
                                                                          "interiors"}:
        raise InvalidFilterError(f"{where} needs 'exterior' (and optionally 'interiors')")
    exterior = _ring(arg["exterior"], f"{where}.exterior")
    holes = [_ring(h, f"{where}.interiors[{i}]")
             for i, h in enumerate(arg.get("interiors") or [])]

    def inside(lons: F64, lats: F64) -> Mask:
        mask = _in_ring(exterior, lons, lats)
        for hole in holes:
            mask &= ~_in_ring(hole, lons, lats)
        return mask

    return inside


CONDITIONS = {"geo_radius": radius, "geo_bounding_box": bounding_box, "geo_polygon": polygon}
