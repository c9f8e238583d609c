"""Class schema: codes, names, colours and the ignore class.

A :class:`ClassSchema` maps the user's class *codes* (the values written in
label and output rasters, e.g. 10, 20, 30 as in ESA WorldCover) to contiguous
*indices* that the model trains on. The DeepGlobe Land Cover schema is the
default.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from geoseg.errors import ConfigError

#: Value used for "no label / ignored" in index space and for nodata in class rasters.
IGNORE_INDEX = 255
NODATA = 255


@dataclass(frozen=True)
class LandClass:
    """One land-cover class."""

    code: int
    name: str
    color: tuple[int, int, int]
    ignore: bool = False


@dataclass(frozen=True)
class ClassSchema:
    """An ordered list of classes; a class's position is its model index."""

    classes: tuple[LandClass, ...]

    def __post_init__(self) -> None:
        codes = [c.code for c in self.classes]
        names = [c.name for c in self.classes]
        if len(set(codes)) != len(codes):
            raise ConfigError(f"class codes must be unique, got {codes}")
        if len(set(names)) != len(names):
            raise ConfigError(f"class names must be unique, got {names}")
        for c in self.classes:
            if not 0 <= c.code < NODATA:
                raise ConfigError(f"class code {c.code} of '{c.name}' must be in 0..254 (255 is nodata)")

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def codes(self) -> list[int]:
        return [c.code for c in self.classes]

    @property
    def colors(self) -> list[tuple[int, int, int]]:
        return [c.color for c in self.classes]

    @property
    def ignored_indices(self) -> list[int]:
        return [i for i, c in enumerate(self.classes) if c.ignore]

    @property
    def evaluated_indices(self) -> list[int]:
        return [i for i, c in enumerate(self.classes) if not c.ignore]

    def index_of(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise ConfigError(f"unknown class '{name}'; classes are {', '.join(self.names)}") from None

    def code_to_index_lut(self, keep_ignored: bool = False) -> np.ndarray:
        """A 256-entry lookup table from class code to model index (ignored classes → 255, unless
        ``keep_ignored``; codes of no class → 255)."""
        lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        for i, c in enumerate(self.classes):
            lut[c.code] = IGNORE_INDEX if c.ignore and not keep_ignored else i
        return lut

    def index_to_code_lut(self) -> np.ndarray:
        """A 256-entry lookup table from model index to class code (255 stays nodata)."""
        lut = np.full(256, NODATA, dtype=np.uint8)
        for i, c in enumerate(self.classes):
            lut[i] = c.code
        return lut

    def with_codes(self, codes: Mapping[str, int], source: str = "--truth-codes") -> "ClassSchema":
        """The same classes, in the same order, with the codes another raster gives them (``codes``: class
        name, in any case, to code; unnamed classes keep their own), so that raster can be read as labels."""
        by_name = {c.name.lower(): c for c in self.classes}
        unknown = [name for name in codes if name.lower() not in by_name]
        if unknown:
            raise ConfigError(f"{source} names '{unknown[0]}', which is not a class; classes are "
                              f"{', '.join(self.names)}")
        given = {name.lower(): int(code) for name, code in codes.items()}
        renamed = tuple(replace(c, code=given.get(c.name.lower(), c.code)) for c in self.classes)
        seen: dict[int, str] = {}
        for c in renamed:
            if c.code in seen:
                raise ConfigError(f"{source} gives '{seen[c.code]}' and '{c.name}' the same code {c.code}; "
                                  "give each class its own code in the reference (name every class it holds)")
            seen[c.code] = c.name
        return ClassSchema(renamed)

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """GDAL colour table keyed by class code (nodata left transparent)."""
        cmap = {code: (0, 0, 0, 0) for code in range(256)}
        for c in self.classes:
            cmap[c.code] = (*c.color, 255)
        return cmap

    def to_dict(self) -> list[dict[str, Any]]:
        return [
            {"code": c.code, "name": c.name, "color": list(c.color), "ignore": c.ignore}
            for c in self.classes
        ]

    @classmethod
    def from_dict(cls, items: Iterable[dict[str, Any]]) -> "ClassSchema":
        classes = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "name" not in item or "color" not in item:
                raise ConfigError(f"classes[{i}] must be a mapping with 'name' and 'color' (and optional "
                                  f"'code', 'ignore')")
            color = parse_color(item["color"])
            if color is None:
                raise ConfigError(f"classes[{i}].color must be three integers 0..255 or '#rrggbb', got "
                                  f"{item['color']!r}")
            code = item.get("code", i)
            if not isinstance(code, int) or isinstance(code, bool):
                raise ConfigError(f"classes[{i}].code must be an integer, got {code!r}")
            classes.append(LandClass(code=code, name=str(item["name"]), color=tuple(color),
                                     ignore=bool(item.get("ignore", False))))
        if len(classes) < 2:
            raise ConfigError("classes must list at least two classes")
        return cls(tuple(classes))


def parse_color(color: Any) -> tuple[int, int, int] | None:
    """``[r, g, b]`` (0–255) or ``"#rrggbb"`` as QGIS and most GIS tools write colours; None if neither."""
    if isinstance(color, str):
        text = color.strip().lstrip("#")
        if len(text) == 6 and all(ch in "0123456789abcdefABCDEF" for ch in text):
            return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
        return None
    is_rgb = isinstance(color, Sequence) and len(color) == 3
    if is_rgb and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in color):
        return tuple(color)
    return None


def ignore_lut(ignored: Iterable[int]) -> np.ndarray:
    """A 256-entry table from model index to itself, with the ``ignored`` indices mapped to IGNORE_INDEX."""
    lut = np.arange(256, dtype=np.uint8)
    lut[list(ignored)] = IGNORE_INDEX
    return lut


DEEPGLOBE = ClassSchema((
    LandClass(0, "urban", (0, 255, 255)),
    LandClass(1, "agriculture", (255, 255, 0)),
    LandClass(2, "rangeland", (255, 0, 255)),
    LandClass(3, "forest", (0, 255, 0)),
    LandClass(4, "water", (0, 0, 255)),
    LandClass(5, "barren", (255, 255, 255)),
    LandClass(6, "unknown", (0, 0, 0), ignore=True),
))


def parse_code_mapping(text: str, source: str = "--truth-codes") -> dict[str, int]:
    """``building=10,road=30``: class names to the codes another raster uses for them."""
    mapping: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, code = part.partition("=")
        if not sep or not name.strip() or not code.strip().isdigit():
            raise ConfigError(f"{source} takes NAME=CODE pairs separated by commas (e.g. "
                              f"building=10,road=30), got {part!r}")
        mapping[name.strip()] = int(code)
    if not mapping:
        raise ConfigError(f"{source} is empty; give NAME=CODE pairs such as building=10,road=30")
    return mapping
