"""Training data: each scene's sampling, the chip dataset and the samplers that pick chips, label and band
statistics, ``geoseg init``'s project set-up, and geoseg's synthetic sample scenes.

Built on :mod:`geoseg.io` (reading) and :mod:`geoseg.outputs` (the sample data is written as real products).
"""
