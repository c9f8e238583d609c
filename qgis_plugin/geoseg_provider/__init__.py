"""geoseg's QGIS Processing provider: the geoseg command in the Processing Toolbox, the graphical modeler
and batch mode."""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    from .plugin import GeosegPlugin

    return GeosegPlugin(iface)
