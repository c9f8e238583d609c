"""geoseg's progress protocol (``GEOSEG_PROGRESS=lines``) read into one overall percentage.

geoseg writes, on stderr, lines ``PROGRESS <stage> <done>/<total>`` (``?`` for a total not known yet),
optionally followed by ``epoch=<e>/<E>`` during training. This module has no QGIS import, so geoseg's own
tests run it against real geoseg runs (``tests/test_progress_lines.py``).
"""

import re

LINE = re.compile(r"^PROGRESS (?P<stage>[\w-]+) (?P<done>\d+)/(?P<total>\d+|\?)"
                  r"(?: epoch=(?P<e>\d+)/(?P<E>\d+))?$")

#: Each stage's share of a whole run, in percent: (start, end).
STAGES = {
    "load": (0, 2),          # the model's fields read (torch imported where needed)
    "engine": (2, 5),        # the engine made ready (an export or an int8 model, made once)
    "predict": (5, 85),
    "resample": (85, 90),
    "vectorize": (90, 100),
    "scenes": (0, 90),       # a region: one step per scene
    "evaluate": (0, 100),
    "render": (0, 100),
}

#: Within an epoch of training: its training chips, then its validation.
EPOCH_SHARES = {"train": (0.0, 0.9), "validate": (0.9, 1.0)}


def parse(line):
    """(stage, percent) of one line of geoseg's stderr; percent is None where the total is not known yet;
    None for a line that is not progress."""
    match = LINE.match(line.strip())
    if match is None:
        return None
    stage, done, total = match["stage"], int(match["done"]), match["total"]
    if total == "?" or int(total) <= 0:
        return stage, None
    part = min(1.0, done / int(total))
    if stage in EPOCH_SHARES:
        epoch, epochs = (int(match["e"]), int(match["E"])) if match["e"] else (1, 1)
        low, high = EPOCH_SHARES[stage]
        return stage, 100.0 * (epoch - 1 + low + (high - low) * part) / max(epochs, 1)
    low, high = STAGES.get(stage, (0, 100))
    return stage, low + (high - low) * part
