"""Is a CT image in Hounsfield units? The model was trained on HU and the
noise models are in HU, so a CT object that holds another quantity (a
perfusion map, an iodine or material map, effective Z, electron density)
is ignored with its reason unless the user says otherwise.

Evidence that the values are not HU, any of which is enough:

* RescaleType (0028,1054), at the top level or in a Pixel Value
  Transformation functional group, other than ``HU`` (PS3.3 C.11.1.1.2 lists
  US, MGML, Z_EFF, ED, EDW, HU_MOD, PCT);
* a Real World Value Mapping whose units are not UCUM ``[hnsf'U]``;
* Image Type or Frame Type values naming a derived quantity (PERFUSION,
  IODINE, material and density maps). Virtual monoenergetic and virtual
  non-contrast images are HU and pass.

Parametric Maps (floating-point maps of any quantity, no PixelData) are
skipped by class before this is asked (:mod:`denoise.dicom.scan`).
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import ParametricMapStorage

PARAMETRIC_MAP = ParametricMapStorage
HU_UNITS = "[hnsf'U]"
# Image/Frame Type values (3 and 4) that name a quantity other than attenuation in HU.
DERIVED_QUANTITIES = frozenset({
    "PERFUSION", "RCBF", "RCBV", "MTT", "TTP", "TMAX", "PERMEABILITY", "FLOW", "BLOOD_VOLUME",
    "IODINE", "IODINE_MAP", "MATERIAL", "MAT_SPECIFIC", "MAT_FRACTIONAL", "MAT_VALUE_BASED",
    "MAT_QUANTIFICATION", "EFF_ATOMIC_NUM", "Z_EFF", "ZEFF", "ELECTRON_DENSITY", "DENSITY_MAP",
    "FAT_FRACTION", "CALCIUM_MAP", "URIC_ACID",
})


def is_hu_label(text: str) -> bool:
    """``HU`` or a spelled-out Hounsfield unit, as scanners write it (e.g. "Houndsfield Unit")."""
    letters = "".join(ch for ch in text.upper() if ch.isalpha())
    return letters == "HU" or letters.startswith(("HOUNSFIELD", "HOUNDSFIELD"))


def _functional_items(ds: Dataset, sequence: str) -> list[Dataset]:
    items: list[Dataset] = []
    for group in (*ds.get("SharedFunctionalGroupsSequence", []), *ds.get("PerFrameFunctionalGroupsSequence", [])):
        items += list(group.get(sequence, []))
    return items


def _values(elem_value) -> list[str]:
    if elem_value is None:
        return []
    if isinstance(elem_value, str):
        return [elem_value]
    return [str(v) for v in elem_value]


def non_hu_reason(ds: Dataset) -> str | None:
    """Why the values of this CT object are not HU, in one line, or None when they are."""
    for item in (ds, *_functional_items(ds, "PixelValueTransformationSequence")):
        kind = str(item.get("RescaleType", "") or "").strip()
        if kind and not is_hu_label(kind):
            return f"values are not HU (RescaleType {kind})"
    for item in (*ds.get("RealWorldValueMappingSequence", []),
                 *_functional_items(ds, "RealWorldValueMappingSequence")):
        for units in item.get("MeasurementUnitsCodeSequence", []):
            code = str(units.get("CodeValue", "") or "")
            if code and code != HU_UNITS:
                meaning = str(units.get("CodeMeaning", "") or code)
                return f"values are not HU (real-world value units {meaning})"
    types = _values(ds.get("ImageType"))[2:]
    for item in _functional_items(ds, "CTImageFrameTypeSequence"):
        types += _values(item.get("FrameType"))[2:]
    named = sorted({t.strip().upper() for t in types} & DERIVED_QUANTITIES)
    if named:
        return f"values are not HU (image type {'/'.join(named)}: a derived quantity map)"
    return None
