"""Patrol route planning: risk per hot spot and hour, routes for every team, adherence.

``risk`` ranks a station's grids into candidate stops, ``travel`` measures the way between
them (straight line × detour factor, or shortest paths on a supplied road network),
``solver`` plans all teams of a shift at once with OR-Tools (and a greedy baseline),
``plans`` builds, stores and exports plans, and ``adherence`` compares a stored plan with the
teams' GPS pings afterwards.
"""
