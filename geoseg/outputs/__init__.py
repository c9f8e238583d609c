"""Writing GIS products: styled class rasters, the minimum mapping unit, polygons with geodesic measures, QGIS
styles, STAC items and image panels.

These writers depend only on :mod:`geoseg.io`, so prediction, evaluation and the synthetic sample data all
write the same files the same way.
"""
