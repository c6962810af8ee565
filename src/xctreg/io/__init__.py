"""Medical image IO: CT volumes (SimpleITK) and X-ray images (.npy/PNG/TIFF/DICOM)."""

from xctreg._fs import sha256_file
from xctreg.io.volume import (
    Volume,
    check_ct,
    downsample,
    pyramid,
    read_volume,
    resample,
    write_volume,
)
from xctreg.io.xray import XRay, read_xray, transmission_to_attenuation, write_xray

__all__ = [
    "Volume",
    "XRay",
    "check_ct",
    "downsample",
    "pyramid",
    "read_volume",
    "read_xray",
    "resample",
    "sha256_file",
    "transmission_to_attenuation",
    "write_volume",
    "write_xray",
]
