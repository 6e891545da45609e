"""Framework-free data layer shared by both backends: dataset registry, sources, readers, the
deterministic batch stream, the run contract (flags, results) and the neutral weights format.

Never imports tensorflow or torch (tests/test_imports.py checks). Run: python -m data list
"""
from .errors import DataError
from .registry import DATASETS, get_spec
from .sources import LoadedData, load
from .stream import Stream, batch_hash, make_stream, normalize

__all__ = ["DATASETS", "DataError", "LoadedData", "Stream", "batch_hash", "get_spec", "load",
           "make_stream", "normalize"]
