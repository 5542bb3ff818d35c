"""The selection rules (pure: items in, chosen groups and log lines out).

- Sentinel-2 L2A: candidate acquisitions after the event within POST_DAYS, granules of one
  acquisition (same datatake, else same platform and day) grouped and later mosaicked; the one with
  the least unusable area (cloud + cloud shadow + cirrus + no data, counted from the SCL band of the
  area's window, not from the scene's metadata) wins; ties go to the one nearest the event.  An
  acquisition whose cloud over the covered area exceeds MAX_CLOUD is refused.
- Sentinel-1, per orbit direction: the post-event acquisition nearest after the event, and the
  pre-event acquisition nearest before it ON THE SAME RELATIVE ORBIT (same geometry); if the nearest
  post-event orbit has no pre-event scene in PRE_DAYS, the next post-event acquisition is tried."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from .catalog import Item
from .errors import NoItems


@dataclass
class Group:
    """One acquisition over the area: one or several items (granules / frames) to mosaic."""
    items: list
    cloud: float | None = None  # cloud fraction of the covered part of the area (S2, from SCL)
    coverage: float | None = None  # fraction of the area with data
    notes: list = field(default_factory=list)

    @property
    def datetime(self) -> dt.datetime:
        return min(i.datetime for i in self.items)

    @property
    def relative_orbit(self):
        return self.items[0].relative_orbit

    @property
    def direction(self) -> str:
        return self.items[0].orbit_direction

    @property
    def ids(self) -> str:
        return ", ".join(i.id for i in self.items)

    @property
    def unusable(self) -> float:
        c, v = self.cloud if self.cloud is not None else 1.0, self.coverage or 0.0
        return 1.0 - (1.0 - c) * v


def _s2_key(i: Item):
    return i.properties.get("s2:datatake_id") or (i.platform, i.datetime.date().isoformat())


def _s1_key(i: Item):
    return (i.orbit_direction, str(i.relative_orbit), i.platform, i.datetime.date().isoformat())


def group(items: list[Item], key) -> list[Group]:
    out: dict = {}
    for i in items:
        out.setdefault(key(i), []).append(i)
    return sorted((Group(sorted(v, key=lambda i: i.id)) for v in out.values()), key=lambda g: (g.datetime, g.ids))


def s2_groups(items):
    return group(items, _s2_key)


def s1_groups(items):
    return group(items, _s1_key)


def choose_s2(groups: list[Group], event: dt.datetime, max_cloud: float, log: list) -> Group:
    """groups already measured (cloud, coverage set)."""
    if not groups:
        raise NoItems("No Sentinel-2 L2A acquisition over the area in the post-event window.")
    for g in groups:
        log.append(f"  S2 candidate {g.datetime:%Y-%m-%d %H:%M} ({len(g.items)} granule(s): {g.ids}): cloud over the "
                   f"area {100 * g.cloud:.1f}% of {100 * g.coverage:.1f}% covered (scene metadata says "
                   f"{_meta_cloud(g)})")
    ok = [g for g in groups if g.coverage > 0 and 100 * g.cloud <= max_cloud]
    if not ok:
        best = min(groups, key=lambda g: g.cloud)
        raise NoItems(f"No Sentinel-2 acquisition has at most {max_cloud:g}% cloud over the area in the window "
                      f"(the clearest, {best.datetime:%Y-%m-%d}, has {100 * best.cloud:.1f}%). Widen POST_DAYS or "
                      "raise MAX_CLOUD.")
    best = min(ok, key=lambda g: (round(g.unusable, 6), g.datetime - event))
    log.append(f"S2 rule: least cloud over the area measured from the SCL band (cloud, shadow, cirrus and gaps "
               f"count as unusable), at most {max_cloud:g}% cloud, ties to the date nearest the event -> "
               f"{best.datetime:%Y-%m-%d} ({best.ids}), {100 * best.cloud:.1f}% cloud, "
               f"{100 * best.coverage:.1f}% of the area covered"
               + (f", mosaic of {len(best.items)} granules" if len(best.items) > 1 else "") + ".")
    return best


def _meta_cloud(g: Group) -> str:
    v = [i.properties.get("eo:cloud_cover") for i in g.items if i.properties.get("eo:cloud_cover") is not None]
    return ", ".join(f"{float(x):.0f}%" for x in v) + " for the whole scene(s)" if v else "nothing"


def choose_s1(post: list[Group], pre: list[Group], direction: str, log: list) -> tuple[Group, Group]:
    """post: acquisitions after the event; pre: before it; both of one orbit direction."""
    label = f"S1 {direction}"
    if not post:
        raise NoItems(f"No calibrated Sentinel-1 {direction} acquisition over the area in the post-event window.")
    for p in sorted(post, key=lambda g: (g.datetime, g.ids)):
        same = [g for g in pre if str(g.relative_orbit) == str(p.relative_orbit)]
        if not same:
            log.append(f"  {label}: post-event {p.datetime:%Y-%m-%d} (relative orbit {p.relative_orbit}) skipped: no "
                       "pre-event scene on that relative orbit in the pre-event window.")
            continue
        b = max(same, key=lambda g: (g.datetime, g.ids))
        others = [g for g in pre if g not in same and g.datetime > b.datetime]
        log.append(f"{label} rule: post-event nearest after the event, pre-event nearest before it on the same "
                   f"relative orbit -> post {p.datetime:%Y-%m-%d} ({p.ids}), pre {b.datetime:%Y-%m-%d} ({b.ids}), "
                   f"relative orbit {p.relative_orbit}"
                   + (f" (nearer pre-event scenes on other orbits ignored: "
                      f"{', '.join(f'{g.datetime:%Y-%m-%d} orbit {g.relative_orbit}' for g in others)})" if others else "")
                   + ".")
        return p, b
    raise NoItems(f"No Sentinel-1 {direction} pair: none of the post-event acquisitions has a pre-event scene on the "
                  "same relative orbit in the pre-event window. Widen PRE_DAYS.")
