"""denoise.text.one_line: every failure reason is one short line that names its cause."""

from __future__ import annotations

from denoise.text import one_line

# What pydicom raises when every JPEG 2000 plugin failed on a corrupt codestream
# (pydicom 3 with python-gdcm, pylibjpeg-openjpeg and Pillow installed).
ALL_PLUGINS_FAILED = ("Unable to decode as exceptions were raised by all available plugins:\n"
                      "  gdcm: 'NoneType' object has no attribute 'encode'\n"
                      "  pylibjpeg: Error decoding the J2K data: failed to read the header\n"
                      "  pillow: broken data stream when reading image file")

EMBEDDED_TRACEBACK = """decoding failed:
Traceback (most recent call last):
  File "/site-packages/pydicom/pixels/decoders/gdcm.py", line 135, in _decode_frame
    frame = img.GetBuffer().encode("utf-8", "surrogateescape")
            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
AttributeError: 'NoneType' object has no attribute 'encode'

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/site-packages/openjpeg/utils.py", line 12, in decode
RuntimeError: [ERROR] Error with SIZ marker: number of component is illegal -> 65535
"""


def test_a_listed_cause_survives_the_cap_even_when_wrapped_again():
    inner = one_line(RuntimeError(ALL_PLUGINS_FAILED))
    outer = one_line(ValueError(f"cannot decode pixel data ({inner})"))  # as pixels.py, then batch.py do
    for text in (inner, outer):
        assert "\n" not in text and len(text) <= 160, text
        assert "gdcm: 'NoneType'" in text
        assert "pylibjpeg: Error decoding the J2K data: failed to read the header" in text
    assert "; pylibjpeg: " in inner  # the list items stay apart


def test_the_whole_message_when_it_fits():
    assert one_line(RuntimeError(ALL_PLUGINS_FAILED), 400) == (
        "Unable to decode as exceptions were raised by all available plugins: gdcm: 'NoneType' object has no "
        "attribute 'encode'; pylibjpeg: Error decoding the J2K data: failed to read the header; pillow: broken "
        "data stream when reading image file")


def test_embedded_traceback_text_is_dropped_and_its_causes_kept():
    text = one_line(RuntimeError(EMBEDDED_TRACEBACK))
    assert "Traceback" not in text and 'File "' not in text and "^" not in text and "above exception" not in text
    assert len(text) <= 160 and "number of component is illegal" in text
    assert one_line(RuntimeError(EMBEDDED_TRACEBACK), 400) == (
        "decoding failed: AttributeError: 'NoneType' object has no attribute 'encode'; "
        "RuntimeError: [ERROR] Error with SIZ marker: number of component is illegal -> 65535")


def test_cap_and_folding():
    assert len(one_line("x" * 1000)) == 160 and one_line("x" * 1000).endswith("...")
    assert len(one_line("word " * 100, limit=64)) <= 64
    assert one_line("not CT (Modality M\nR)") == "not CT (Modality M R)"  # a line break inside a value
    assert one_line("a \t b") == "a b"
    assert one_line(ValueError()) == "ValueError"
    assert one_line(KeyError("PixelData")) == "'PixelData'"
