"""Class names and colours of the standard segmentation data sets, and the user's own palettes.

A :class:`Palette` is a list of class names with one RGB colour each; class ID ``i`` is
``names[i]`` drawn in ``colors[i]``. Named palettes: ``camvid`` (the 32-class CamVid table,
``label_colors.txt`` order: Animal ... Wall), ``cityscapes`` (the 19 train IDs), ``voc``
(Pascal VOC's 21 classes with its bit-interleaved colour map) and ``ade20k`` (150 classes,
mmsegmentation's ADE20K colours). A user's palette is a JSON list of ``{"name", "r", "g", "b"}``
(or ``[name, r, g, b]`` rows) or a CSV with the columns name, r, g, b.

Example:
    >>> camvid = get_palette("camvid")
    >>> len(camvid), camvid.names[0], camvid.colors[0], camvid.color_of("Sky")
    (32, 'Animal', (64, 128, 64), (128, 128, 128))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vislab.core.errors import DataError
from vislab.core.files import read_csv_rows, read_json

CAMVID = [
    ("Animal", 64, 128, 64), ("Archway", 192, 0, 128), ("Bicyclist", 0, 128, 192), ("Bridge", 0, 128, 64),
    ("Building", 128, 0, 0), ("Car", 64, 0, 128), ("CartLuggagePram", 64, 0, 192), ("Child", 192, 128, 64),
    ("Column_Pole", 192, 192, 128), ("Fence", 64, 64, 128), ("LaneMkgsDriv", 128, 0, 192),
    ("LaneMkgsNonDriv", 192, 0, 64), ("Misc_Text", 128, 128, 64), ("MotorcycleScooter", 192, 0, 192),
    ("OtherMoving", 128, 64, 64), ("ParkingBlock", 64, 192, 128), ("Pedestrian", 64, 64, 0),
    ("Road", 128, 64, 128), ("RoadShoulder", 128, 128, 192), ("Sidewalk", 0, 0, 192),
    ("SignSymbol", 192, 128, 128), ("Sky", 128, 128, 128), ("SUVPickupTruck", 64, 128, 192),
    ("TrafficCone", 0, 0, 64), ("TrafficLight", 0, 64, 64), ("Train", 192, 64, 128), ("Tree", 128, 128, 0),
    ("Truck_Bus", 192, 128, 192), ("Tunnel", 64, 0, 64), ("VegetationMisc", 192, 192, 0), ("Void", 0, 0, 0),
    ("Wall", 64, 192, 0),
]
CITYSCAPES = [
    ("road", 128, 64, 128), ("sidewalk", 244, 35, 232), ("building", 70, 70, 70), ("wall", 102, 102, 156),
    ("fence", 190, 153, 153), ("pole", 153, 153, 153), ("traffic light", 250, 170, 30),
    ("traffic sign", 220, 220, 0), ("vegetation", 107, 142, 35), ("terrain", 152, 251, 152),
    ("sky", 70, 130, 180), ("person", 220, 20, 60), ("rider", 255, 0, 0), ("car", 0, 0, 142),
    ("truck", 0, 0, 70), ("bus", 0, 60, 100), ("train", 0, 80, 100), ("motorcycle", 0, 0, 230),
    ("bicycle", 119, 11, 32),
]
VOC_NAMES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
             "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
             "tvmonitor"]
ADE20K_NAMES = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
]
ADE20K_COLORS = [
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80), (140, 140, 140),
    (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70),
    (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3), (0, 102, 200),
    (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220),
    (255, 9, 92), (112, 9, 255), (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10),
    (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140),
    (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0), (0, 0, 255),
    (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255), (11, 200, 200), (255, 82, 0), (0, 255, 245),
    (0, 61, 255), (0, 255, 112), (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0),
    (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0),
    (0, 255, 153), (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194), (0, 255, 82),
    (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255), (0, 255, 163), (255, 153, 0),
    (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184, 170),
    (133, 0, 255), (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112),
    (92, 255, 0), (0, 224, 255), (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0),
    (255, 0, 163), (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255), (255, 255, 0),
    (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255),
    (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255), (184, 255, 0), (0, 133, 255), (255, 214, 0),
    (25, 194, 194), (102, 255, 0), (92, 0, 255),
]


def voc_colormap(count: int = 256) -> list[tuple[int, int, int]]:
    """Pascal VOC's colour map: the bits of the class ID interleaved into R, G and B (VOCdevkit's labelcolormap)."""
    colors = []
    for index in range(count):
        r = g = b = 0
        value = index
        for shift in range(7, -1, -1):
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colors.append((r, g, b))
    return colors


@dataclass(frozen=True)
class Palette:
    """Class names and their RGB colours, class ID = position."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    name: str = "custom"

    def __post_init__(self):
        if len(self.names) != len(self.colors):
            raise ValueError(f"palette {self.name}: {len(self.names)} names but {len(self.colors)} colours")

    def __len__(self) -> int:
        return len(self.names)

    def array(self, count: int | None = None) -> np.ndarray:
        """(count, 3) uint8 colours; IDs past the palette get distinct VOC colours (never black twice)."""
        count = len(self) if count is None else count
        colors = list(self.colors[:count])
        extra = [c for c in voc_colormap(512) if c not in colors]
        colors += extra[: max(0, count - len(colors))]
        return np.array(colors, dtype=np.uint8).reshape(-1, 3)

    def color_of(self, name: str) -> tuple[int, int, int]:
        return self.colors[self.names.index(name)]

    def to_json(self) -> list[dict]:
        return [{"name": n, "r": c[0], "g": c[1], "b": c[2]} for n, c in zip(self.names, self.colors)]

    @classmethod
    def from_json(cls, rows, name: str = "custom") -> "Palette":
        """Rows of name, r, g, b (dicts or sequences); a ValueError names the first bad row."""
        if not isinstance(rows, (list, tuple)) or not rows:
            raise ValueError("no rows: one row per class ID is needed")
        names, colors = [], []
        for number, row in enumerate(rows, start=1):
            if isinstance(row, dict):
                values = [row.get("name"), row.get("r"), row.get("g"), row.get("b")]
            elif isinstance(row, (list, tuple)):
                values = list(row)
            else:
                raise ValueError(f"row {number} is {row!r}, not name, r, g, b")
            if len(values) < 4 or values[0] is None or not str(values[0]).strip():
                raise ValueError(f"row {number} {values!r} is not a name and three colour values")
            values = values[:4]
            try:
                color = tuple(int(str(v).strip()) for v in values[1:])
            except ValueError:
                raise ValueError(f"row {number}: colour {values[1:]!r} is not three whole numbers") from None
            if not all(0 <= c <= 255 for c in color):
                raise ValueError(f"row {number}: colour {color} is outside 0..255")
            if color in colors:
                raise ValueError(f"row {number}: colour {color} is already class {colors.index(color)}'s")
            names.append(str(values[0]).strip())
            colors.append(color)
        return cls(tuple(names), tuple(colors), name)

    @classmethod
    def for_classes(cls, names, colors=None) -> "Palette":
        """A palette for ``names``: the given colours, else VOC's colour map (0 black, then distinct)."""
        colors = list(colors or [])
        extra = voc_colormap(max(len(names), 1) + len(colors))
        colors += [c for c in extra if c not in colors][: len(names) - len(colors)]
        return cls(tuple(map(str, names)), tuple(tuple(map(int, c)) for c in colors[: len(names)]))


NAMED = {
    "camvid": lambda: Palette(tuple(r[0] for r in CAMVID), tuple(tuple(r[1:]) for r in CAMVID), "camvid"),
    "cityscapes": lambda: Palette(tuple(r[0] for r in CITYSCAPES), tuple(tuple(r[1:]) for r in CITYSCAPES),
                                  "cityscapes"),
    "voc": lambda: Palette(tuple(VOC_NAMES), tuple(voc_colormap(21)), "voc"),
    "ade20k": lambda: Palette(tuple(ADE20K_NAMES), tuple(ADE20K_COLORS), "ade20k"),
}


def get_palette(spec: str) -> Palette:
    """A named palette (camvid, cityscapes, voc, ade20k) or a JSON/CSV file of name, r, g, b.

    Raises:
        DataError: an unknown name, a missing file or a malformed row (the message names it).
    """
    key = str(spec).lower().replace("-", "").replace("_", "")
    aliases = {"camvid32": "camvid", "cityscapes19": "cityscapes", "voc21": "voc", "pascalvoc": "voc",
               "ade20k150": "ade20k", "ade": "ade20k"}
    key = aliases.get(key, key)
    if key in NAMED:
        return NAMED[key]()
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"--palette {spec!r}: not a named palette ({', '.join(NAMED)}) and no such file. Give a "
                        "name, or a JSON/CSV file with one row per class ID: name, r, g, b")
    fix = ("give one row per class ID with name, r, g, b (0..255), as CSV with that header or a JSON list of "
           '{"name": ..., "r": ..., "g": ..., "b": ...}')
    if path.suffix.lower() == ".json":
        data = read_json(path, "a palette (JSON)", fix)
    else:
        rows = [row for row in read_csv_rows(path, "a palette (CSV)", fix) if any(cell.strip() for cell in row)]
    try:
        if path.suffix.lower() == ".json":
            if isinstance(data, dict):
                data = data.get("palette", data.get("classes", data))
            return Palette.from_json(data, path.stem)
        if rows and [c.strip().lower() for c in rows[0][:4]] == ["name", "r", "g", "b"]:
            rows = rows[1:]
        return Palette.from_json(rows, path.stem)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise DataError(f"{path}: not a palette ({type(exc).__name__}: {exc}). Expected one row per class ID with "
                        "name, r, g, b (0..255), as CSV with that header or a JSON list of "
                        '{"name": ..., "r": ..., "g": ..., "b": ...}') from None
