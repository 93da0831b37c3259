"""The serving side: the inference gateway and what watches its clients.

Extraction detection lives in :mod:`dlsec.serve.detection`
(``from dlsec.serve.detection import ExtractionDetector``).
"""
