"""One readable line from an ITK/SimpleITK read error (their messages start with C++ file names)."""

from __future__ import annotations

_TRUNCATED_HINTS = ("not read completely", "but received", "fread got only", "unexpected end", "premature", "truncat")


def itk_reason(message: str) -> str:
    """The line of an ITK exception that says what went wrong, without its C++ prefixes
    ("ITK ERROR: PNGImageIO(0x...): ...", "sitk::ERROR: ..."); else its first line."""
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    hint = truncation_hint(message)
    if hint is not None:
        return hint
    itk = next((ln.split(": ", 1)[-1].split("): ", 1)[-1] for ln in lines if ln.startswith(("ITK ERROR", "sitk::ERROR"))), None)
    return (itk or (lines[0] if lines else "unknown reason"))[:200]


def truncation_hint(message: str) -> str | None:
    """The line of an ITK exception that says data were missing (NRRD, MetaImage), if any."""
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    hit = next((ln for ln in lines if any(h in ln.lower() for h in _TRUNCATED_HINTS)), None)
    if hit is None and any("MetaImageIO" in ln and "cannot be read" in ln for ln in lines):
        hit = "MetaImage could not read its voxels"  # MetaIO says why on stderr only
    return None if hit is None else hit[:160]
