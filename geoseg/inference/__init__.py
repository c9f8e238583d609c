"""Prediction, in the order it flows: per-block model work and blending on one global chip grid (``blocks``),
the scene at the model's sampling (``resample``), scheduling on dask (``schedule``), resumable raster writing
(``resume``), and the ``predict`` command for one scene and for a region of many (``predict``, ``region``).
"""
