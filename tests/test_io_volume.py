"""CT volume IO: formats, LPS affine, validation and resampling."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import assert_one_line_error
from xctreg.errors import XctregError
from xctreg.io import Volume, check_ct, downsample, pyramid, read_volume, resample, write_volume


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_write_read_round_trip(tmp_path, small_phantom, suffix) -> None:
    path = write_volume(small_phantom, tmp_path / f"ct{suffix}")
    vol = read_volume(path)
    np.testing.assert_allclose(vol.hu, small_phantom.hu, atol=1e-3)
    np.testing.assert_allclose(vol.affine, small_phantom.affine, atol=1e-5)
    assert not list(tmp_path.glob(".*tmp*"))  # the temp file was renamed away


def test_affine_honours_direction_and_origin(tmp_path) -> None:
    hu = np.full((10, 12, 14), -1000.0, dtype=np.float32)
    hu[2:8, 3:9, 4:10] = 300.0
    hu[4:6, 5:7, 6:8] = 40.0
    direction = np.array([[-1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]])  # RAS-like axes stored in LPS
    vol = Volume(hu, spacing=[0.5, 0.7, 2.0], origin=[100.0, -20.0, 5.0], direction=direction)
    back = read_volume(write_volume(vol, tmp_path / "v.nii.gz"))
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)
    # voxel index (i, j, k) = (1, 2, 3) lands where direction and spacing say
    np.testing.assert_allclose(back.index_to_world([1, 2, 3]), [100.0 - 0.5, -20.0 - 1.4, 5.0 + 6.0], atol=1e-4)
    np.testing.assert_allclose(back.world_to_index(back.index_to_world([1, 2, 3])), [1, 2, 3], atol=1e-9)
    np.testing.assert_allclose(back.center, back.corners_world().mean(0), atol=1e-6)


def test_dicom_series_directory(tmp_path, small_phantom) -> None:
    img = sitk.Cast(small_phantom.to_sitk(), sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = "1.2.826.0.1.3680043.2.1125.1.42"
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        for tag, value in [
            ("0008|0060", "CT"),
            ("0020|000e", series),
            ("0020|000d", series + ".1"),
            ("0020|0013", str(k + 1)),
            ("0020|0032", "\\".join(f"{v:.4f}" for v in img.TransformIndexToPhysicalPoint((0, 0, k)))),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
            ("0028|0030", "6\\6"),
            ("0018|0050", "6"),
        ]:
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_path / f"s{k:03d}.dcm"))
        writer.Execute(sl)
    vol = read_volume(tmp_path)
    assert vol.shape_ijk == small_phantom.shape_ijk
    # a second series in the same folder is refused rather than guessed
    other = tmp_path / "z_other.dcm"
    sl = img[:, :, 0]
    for tag, value in [("0008|0060", "CT"), ("0020|000e", series + ".9"), ("0020|000d", series + ".1"), ("0020|0013", "1")]:
        sl.SetMetaData(tag, value)
    writer.SetFileName(str(other))
    writer.Execute(sl)
    with pytest.raises(XctregError, match="2 DICOM series"):
        read_volume(tmp_path)
    # a slice missing from the middle: refused, not read as if evenly spaced
    other.unlink()
    (tmp_path / "s005.dcm").unlink()
    with pytest.raises(XctregError, match="uneven slice spacing: 12.00 mm between slices 5 and 6, 6.00 mm"):
        read_volume(tmp_path)
    np.testing.assert_allclose(vol.spacing, [6.0, 6.0, 6.0], atol=1e-3)
    np.testing.assert_allclose(vol.hu, np.round(small_phantom.hu), atol=1.0)


def test_missing_ct(cli, tmp_path) -> None:
    assert_one_line_error(cli("check", tmp_path / "nope.nii.gz"), "not found")


def test_2d_image_given_as_ct(cli, tmp_path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(np.random.rand(32, 32).astype(np.float32) * 2000 - 1000), str(tmp_path / "x.nrrd"))
    assert_one_line_error(cli("check", tmp_path / "x.nrrd"), "3D")
    sitk.WriteImage(sitk.GetImageFromArray((np.random.rand(1, 32, 32) * 2000 - 1000).astype(np.float32)), str(tmp_path / "y.mha"))
    assert_one_line_error(cli("check", tmp_path / "y.mha"), "single slice")


def test_nan_voxels(cli, tmp_path, small_phantom) -> None:
    vol = Volume(small_phantom.hu.copy(), small_phantom.spacing)
    vol.hu[3, 4, 5] = np.nan
    # ITK's NIfTI reader turns NaN into 0, so NIfTI needs its own check; MHA keeps NaN.
    for name in ("nan.nii.gz", "nan.mha"):
        write_volume(vol, tmp_path / name)
        assert_one_line_error(cli("check", tmp_path / name), "non-finite")
        assert_one_line_error(cli("check", "--force", tmp_path / name), "non-finite")


def test_mask_and_mr_refused_unless_forced(cli, tmp_path, small_phantom) -> None:
    mask = Volume((small_phantom.hu > 200).astype(np.float32), small_phantom.spacing)
    write_volume(mask, tmp_path / "mask.nii.gz")
    assert_one_line_error(cli("check", tmp_path / "mask.nii.gz"), "binary mask")
    assert cli("check", "--force", tmp_path / "mask.nii.gz").code == 0
    mr = Volume(np.clip(small_phantom.hu + 1000.0, 0, None) * 1.7, small_phantom.spacing)
    write_volume(mr, tmp_path / "mr.nii.gz")
    assert_one_line_error(cli("check", tmp_path / "mr.nii.gz"), "no air")


def test_unreadable_file(cli, tmp_path) -> None:
    (tmp_path / "junk.nii.gz").write_bytes(b"not a volume at all")
    assert_one_line_error(cli("check", tmp_path / "junk.nii.gz"), "cannot read CT")


def test_check_ct_spacing_and_empty() -> None:
    with pytest.raises(XctregError, match="spacing"):
        check_ct(Volume(np.zeros((4, 4, 4)), [1.0, 0.0, 1.0]))
    with pytest.raises(XctregError, match="at least 2"):
        check_ct(Volume(np.zeros((1, 4, 4)), [1.0, 1.0, 1.0]))


def test_resample_keeps_box_and_values(small_phantom) -> None:
    half = downsample(small_phantom, 2.0)
    np.testing.assert_allclose(half.spacing, small_phantom.spacing * 2)
    assert half.shape_ijk == tuple(n // 2 for n in small_phantom.shape_ijk)
    np.testing.assert_allclose(half.center, small_phantom.center, atol=1e-6)
    assert abs(float(half.hu.mean()) - float(small_phantom.hu.mean())) < 15.0
    fine = resample(small_phantom, 3.0)
    assert fine.shape_ijk == tuple(n * 2 for n in small_phantom.shape_ijk)
    levels = pyramid(small_phantom, 3)
    assert [lv.shape_ijk[0] for lv in levels] == [64, 32, 16]
    with pytest.raises(XctregError):
        resample(small_phantom, -1.0)


@pytest.mark.parametrize(("suffix", "compress"), [(".nii.gz", True), (".nii", False), (".nrrd", True), (".nrrd", False), (".mha", True), (".mha", False)])
def test_truncated_ct_is_refused(cli, tmp_path, small_phantom, suffix: str, compress: bool) -> None:
    """A CT whose download was cut off (here at a third, and a few bytes short) is refused with
    one line naming the file. ITK itself reads a truncated NIfTI without complaint (the missing
    slices come back as zeros), so xctreg checks the gzip stream and the header's voxel count."""
    full = tmp_path / f"full{suffix}"
    sitk.WriteImage(small_phantom.to_sitk(), str(full), useCompression=compress)
    data = full.read_bytes()
    assert read_volume(full).hu.shape == small_phantom.hu.shape
    for keep in (len(data) // 3, len(data) - 7):
        cut = tmp_path / f"cut{keep}{suffix}"
        cut.write_bytes(data[:keep])
        with pytest.raises(XctregError, match="truncated"):
            read_volume(cut)
    res = cli("check", cut)
    assert_one_line_error(res, "truncated")
    assert str(cut) in res.err


def test_4d_and_inf_ct_refused(cli, tmp_path, small_phantom) -> None:
    """A 4D image (e.g. a time series) and a CT with an infinite voxel: one error line each."""
    one = small_phantom.to_sitk()
    sitk.WriteImage(sitk.JoinSeries([one, one]), str(tmp_path / "4d.nii.gz"))
    assert_one_line_error(cli("check", tmp_path / "4d.nii.gz"), "4D")
    vol = Volume(small_phantom.hu.copy(), small_phantom.spacing)
    vol.hu[1, 2, 3] = np.inf
    for name in ("inf.nii.gz", "inf.mha"):
        write_volume(vol, tmp_path / name)
        assert_one_line_error(cli("check", tmp_path / name), "non-finite")
