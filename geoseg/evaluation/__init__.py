"""Evaluation: class rasters scored chip by chip against labels, the report (plots, error map, worst chips)
and the ``evaluate`` command.
"""
