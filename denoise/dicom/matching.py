"""Match the CT files of two scans of the same slices: a reference (or
original) and its test (or processed) version, for ``evaluate``, ``qa`` and
``report``.

By relative path (default), by SOP reference (a derived file's
SourceImageSequence points at its original, or the SOP UIDs are equal) or by
slice position (same frame of reference, position along the normal, size and
frame count).
"""

from __future__ import annotations

from denoise.dicom.scan import CTFile, ScanResult

MATCH_MODES = ("path", "sop", "position")


def _position_key(ct: CTFile) -> tuple | None:
    if ct.position is None:
        return None
    return (ct.frame_of_reference_uid, round(ct.position, 2), ct.rows, ct.columns, ct.n_frames)


def _key(ct: CTFile, how: str, *, as_test: bool):
    if how == "path":
        return str(ct.relpath)
    if how == "sop":
        return (ct.source_sop_uid or ct.sop_uid) if as_test else ct.sop_uid
    return _position_key(ct)


def match_files(ref: ScanResult, test: ScanResult,
                how: str) -> tuple[list[tuple[CTFile, CTFile]], list[str], list[str]]:
    """Pairs (reference, test) plus the relative paths left unmatched."""
    if how not in MATCH_MODES:
        raise ValueError(f"match must be one of {MATCH_MODES}, got {how!r}")
    ref_files, test_files = ref.files, test.files
    if ref.root.is_file() and test.root.is_file() and len(ref_files) == len(test_files) == 1:
        return [(ref_files[0], test_files[0])], [], []
    index: dict = {}
    ambiguous = set()
    for ct in ref_files:
        key = _key(ct, how, as_test=False)
        if key is None:
            continue
        if key in index:
            ambiguous.add(key)
        index[key] = ct
    pairs, used, unmatched_test = [], set(), []
    for ct in test_files:
        key = _key(ct, how, as_test=True)
        if key is None or key in ambiguous or key not in index or key in used:
            unmatched_test.append(str(ct.relpath))
            continue
        used.add(key)
        pairs.append((index[key], ct))
    matched_ref = {id(r) for r, _ in pairs}
    unmatched_ref = [str(ct.relpath) for ct in ref_files if id(ct) not in matched_ref]
    return pairs, unmatched_ref, unmatched_test
