"""Which object a dataset is: its SOP class and instance, from the main
dataset or, where a PACS export left those empty, from the file meta."""

from __future__ import annotations

from pydicom.dataset import Dataset

_FALLBACKS = (("SOPClassUID", "MediaStorageSOPClassUID"), ("SOPInstanceUID", "MediaStorageSOPInstanceUID"))


def _meta_value(ds: Dataset, keyword: str) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get(keyword, "") or "") if meta is not None else ""


def media_sop_class(ds: Dataset) -> str:
    """SOPClassUID, else the file meta's MediaStorageSOPClassUID, else ''."""
    return str(ds.get("SOPClassUID", "") or "") or _meta_value(ds, "MediaStorageSOPClassUID")


def sop_instance(ds: Dataset) -> str:
    """SOPInstanceUID, else the file meta's MediaStorageSOPInstanceUID, else ''."""
    return str(ds.get("SOPInstanceUID", "") or "") or _meta_value(ds, "MediaStorageSOPInstanceUID")


def fill_uids(ds: Dataset) -> Dataset:
    """Fill an empty SOPClassUID/SOPInstanceUID of the main dataset from the
    file meta, in place (the file itself is never changed); returns ``ds``."""
    for keyword, fallback in _FALLBACKS:
        if not str(ds.get(keyword, "") or "") and _meta_value(ds, fallback):
            setattr(ds, keyword, _meta_value(ds, fallback))
    return ds
