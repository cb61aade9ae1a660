"""Preference data: records, image references, loaders, validation, digests and splits."""

from arr_core.data.dataset import Dataset, load_dataset
from arr_core.data.records import ImageRef, PreferenceRecord

__all__ = ["Dataset", "ImageRef", "PreferenceRecord", "load_dataset"]
