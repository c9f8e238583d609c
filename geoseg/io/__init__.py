"""Reading and naming things on disk: the bottom layer, which every other package may use.

Scenes and their grids (``raster``, ``grid``), the class schema and labels (``classes``, ``labels``), which
scenes a run uses (``manifest``), the area of interest (``aoi``), and how outputs reach the disk safely: file
identity for caches and ``--resume`` (``fingerprint``), atomic writes (``atomic``), one run per output
(``output_lock``) and formats by extension (``formats``). Nothing here knows about models or training.
"""
