"""The STAC API side: catalog presets, conformance, searches, items as plain records.

pystac-client is imported here only (through deps.pystac_client), when a search runs."""
from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from . import deps
from .errors import CatalogError, NetworkError

PC_TOKEN_URL = "https://planetarycomputer.microsoft.com/api/sas/v1/token"


@dataclass(frozen=True)
class Catalog:
    key: str
    label: str
    url: str
    s2: str = "sentinel-2-l2a"
    s1_calibrated: tuple = ("sentinel-1-rtc",)
    s1_uncalibrated: tuple = ("sentinel-1-grd",)
    token_url: str = ""  # Planetary Computer style SAS signing: GET {token_url}/{collection}


CATALOGS = (
    Catalog("planetary", "Microsoft Planetary Computer", "https://planetarycomputer.microsoft.com/api/stac/v1",
            token_url=PC_TOKEN_URL),
    Catalog("earthsearch", "Element84 Earth Search", "https://earth-search.aws.element84.com/v1",
            s1_calibrated=()),
    Catalog("custom", "Custom STAC API (CATALOG_URL)", ""),
)

# asset keys per band, Planetary Computer spelling first, then Earth Search's
S2_ASSETS = {"B04": ("B04", "red"), "B03": ("B03", "green"), "B02": ("B02", "blue"), "B08": ("B08", "nir")}
SCL_ASSETS = ("SCL", "scl")
S1_ASSETS = {"VV": ("vv", "VV"), "VH": ("vh", "VH")}


def catalog(key: str, url: str = "", token_url: str | None = None) -> Catalog:
    """A preset by key; 'custom' takes url.  token_url None keeps the preset's signing."""
    base = next((c for c in CATALOGS if c.key == key), None)
    if base is None:
        raise CatalogError(f"Unknown catalog '{key}'.")
    if key == "custom":
        if not url:
            raise CatalogError("A custom catalog needs its STAC API URL (CATALOG_URL).")
        base = Catalog("custom", url, url)
    elif url:
        base = Catalog(base.key, base.label, url, base.s2, base.s1_calibrated, base.s1_uncalibrated, base.token_url)
    if token_url is not None:
        base = Catalog(base.key, base.label, base.url, base.s2, base.s1_calibrated, base.s1_uncalibrated,
                       token_url.rstrip("/"))
    return base


@dataclass
class Item:
    id: str
    collection: str
    datetime: dt.datetime
    properties: dict
    assets: dict  # key -> href
    bbox: tuple = ()

    @property
    def orbit_direction(self) -> str:
        return str(self.properties.get("sat:orbit_state", "") or "").lower()

    @property
    def relative_orbit(self):
        return self.properties.get("sat:relative_orbit")

    @property
    def platform(self) -> str:
        return str(self.properties.get("platform", "") or "")

    def href(self, keys) -> str | None:
        for k in keys:
            if k in self.assets:
                return self.assets[k]
        return None


def _parse_time(s: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def item_from_dict(d: dict, collection: str) -> Item:
    props = d.get("properties", {})
    when = props.get("datetime") or props.get("start_datetime")
    return Item(d["id"], d.get("collection") or collection, _parse_time(when), props,
                {k: a.get("href") for k, a in d.get("assets", {}).items()}, tuple(d.get("bbox") or ()))


@dataclass
class Session:
    """An open STAC API: its conformance and collections, checked once."""
    cat: Catalog
    server_filter: bool = True  # use the query / filter extension where the server offers it
    log: list = field(default_factory=list)
    client: object = None
    collections: set = field(default_factory=set)
    has_query: bool = False
    has_filter: bool = False

    def open(self, timeout: float = 30.0):
        pc = deps.pystac_client()
        try:
            self.client = pc.Client.open(self.cat.url, timeout=timeout)
            self.collections = {c.id for c in self.client.get_collections()}
        except Exception as exc:  # requests / pystac_client raise many kinds for one cause
            raise CatalogError(f"The STAC catalog at {self.cat.url} could not be reached or read: "
                               f"{_short(exc)}. Check the URL and the internet connection.") from None
        classes = pc.ConformanceClasses
        self.has_query = bool(self.client.conforms_to(classes.QUERY))
        self.has_filter = bool(self.client.conforms_to(classes.FILTER))
        offered = [n for n, ok in (("query", self.has_query), ("filter (CQL2)", self.has_filter)) if ok]
        how = ("server-side with the " + " and ".join(offered) + " extension" if offered and self.server_filter
               else "on the client (" + ("server-side filtering switched off" if offered
                                         else "the server offers neither the query nor the filter extension")
               + ")")
        self.log.append(f"Catalog {self.cat.label} ({self.cat.url}): {len(self.collections)} collections; "
                        f"property filters (orbit direction, relative orbit) run {how}.")
        return self

    def search(self, collection: str, bbox, start: dt.datetime, end: dt.datetime, equals: dict | None = None,
               max_items: int = 500) -> list[Item]:
        """Items of collection intersecting bbox (lon/lat) with start <= datetime <= end and, for every
        property of ``equals``, that value.  The property test runs on the server when it offers the
        query or filter extension (and server_filter is on) and always again on the client, so the
        same items come out either way."""
        equals = equals or {}
        kw = {}
        if equals and self.server_filter:
            if self.has_filter:
                args = [{"op": "=", "args": [{"property": k}, v]} for k, v in equals.items()]
                kw = {"filter": args[0] if len(args) == 1 else {"op": "and", "args": args},
                      "filter_lang": "cql2-json"}
            elif self.has_query:
                kw = {"query": {k: {"eq": v} for k, v in equals.items()}}
        iso = "%Y-%m-%dT%H:%M:%SZ"
        try:
            found = self.client.search(collections=[collection], bbox=list(bbox), limit=100, max_items=max_items,
                                       datetime=f"{start.strftime(iso)}/{end.strftime(iso)}", **kw)
            dicts = list(found.items_as_dicts())
        except Exception as exc:
            raise CatalogError(f"Searching {collection} at {self.cat.url} failed: {_short(exc)}") from None
        items = [item_from_dict(d, collection) for d in dicts]
        items = [i for i in items if start <= i.datetime <= end
                 and all(_same(i.properties.get(k), v) for k, v in equals.items())]
        return sorted(items, key=lambda i: (i.datetime, i.id))


def _same(a, b) -> bool:
    return str(a).lower() == str(b).lower()


def _short(exc) -> str:
    s = str(exc).strip().splitlines()
    return (s[0] if s else type(exc).__name__)[:300]


class Signer:
    """Planetary Computer style SAS signing: one token per collection from
    GET {token_url}/{collection} -> {"token": "..."}, appended to the asset href."""

    def __init__(self, token_url: str, timeout: float = 30.0):
        self.token_url = token_url.rstrip("/")
        self.timeout = timeout
        self.tokens: dict[str, str] = {}

    def token(self, collection: str) -> str:
        if collection not in self.tokens:
            url = f"{self.token_url}/{collection}"
            try:
                with urllib.request.urlopen(url, timeout=self.timeout) as r:
                    self.tokens[collection] = json.loads(r.read().decode("utf-8"))["token"]
            except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
                raise NetworkError(f"Could not get a signing token for {collection} from {url}: "
                                   f"{_short(exc)}") from None
        return self.tokens[collection]

    def sign(self, href: str, collection: str) -> str:
        return href + ("&" if "?" in href else "?") + self.token(collection)
