"""Renderer: Siddon vs analytic, fast marcher vs Siddon, backends, batching, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xctreg.errors import XctregError
from xctreg.geometry import Camera, params_to_matrix, sample_params
from xctreg.io import Volume
from xctreg.render import RenderConfig, Renderer
from xctreg.render.march import siddon_reference
from xctreg.render.rays import make_rays

CAM64 = Camera(1020.0, 64, 64, (6.4, 6.4))


def _rel_l1(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().sum() / b.abs().sum())


def _chord_box(src: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        ta, tb = (lo - src) / d, (hi - src) / d
    t0 = np.minimum(ta, tb).max(-1)
    t1 = np.maximum(ta, tb).min(-1)
    return np.clip(t1 - t0, 0, None)


def _rays_world(vol: Volume, cam: Camera, params: np.ndarray):  # noqa: ANN202
    from xctreg.geometry import PoseReference, backproject, pixel_grid

    ref = PoseReference(tuple(vol.center), 750.0)
    T = params_to_matrix(torch.tensor(params, dtype=torch.float64), ref)
    src, d = backproject(pixel_grid(cam, torch.float64), T, cam)
    rays = make_rays(T, cam, torch.as_tensor(vol.affine), vol.shape_ijk)
    return src.numpy(), d.numpy(), rays


def test_siddon_box_is_exact() -> None:
    hu = np.zeros((30, 34, 38, 1))  # (k, j, i, C), 2 x 2.5 x 3 mm voxels
    hu[5:22, 8:30, 4:31] = 1.0
    vol = Volume(hu[..., 0], spacing=[2.0, 2.5, 3.0], origin=[-50.0, -40.0, -30.0])
    src, d, rays = _rays_world(vol, Camera(1020.0, 24, 24, (8.0, 8.0)), np.array([[7.0, -9.0, 11.0, 3.0, -4.0, 5.0]]))
    got = siddon_reference(hu, rays)[0, :, 0].numpy()
    lo = vol.index_to_world(np.array([4, 8, 5]) - 0.5)
    hi = vol.index_to_world(np.array([30, 29, 21]) + 0.5)
    expected = _chord_box(src[0], d[0], lo, hi)
    assert expected.max() > 50 and (expected > 0).sum() > 50
    np.testing.assert_allclose(got, expected, atol=1e-6 * expected.max())


def test_siddon_ellipsoid_within_half_percent() -> None:
    n, sp = 96, 1.0
    axes = np.array([40.0, 30.0, 36.0])
    sub = (np.arange(4) + 0.5) / 4 - 0.5  # 4x4x4 supersampling per voxel for partial volume
    c = (np.arange(n) - (n - 1) / 2) * sp
    frac = np.zeros((n, n, n))
    for a in sub:
        for b in sub:
            for e in sub:
                x, y, z = c[None, None, :] + a, c[None, :, None] + b, c[:, None, None] + e
                frac += ((x / axes[0]) ** 2 + (y / axes[1]) ** 2 + (z / axes[2]) ** 2) <= 1
    frac /= 64
    vol = Volume(frac, spacing=[sp] * 3, origin=[c[0]] * 3)
    src, d, rays = _rays_world(vol, Camera(1020.0, 32, 32, (2.4, 2.4)), np.array([[5.0, 8.0, -6.0, 2.0, -3.0, 0.0]]))
    got = siddon_reference(frac[..., None], rays)[0, :, 0].numpy()
    # analytic chord through x²/a² + y²/b² + z²/c² = 1: scale to the unit sphere
    s, dd = src[0] / axes, d[0] / axes
    A = (dd**2).sum(-1)
    B = 2 * (s[None] * dd).sum(-1)
    C = (s**2).sum() - 1
    disc = np.clip(B**2 - 4 * A * C, 0, None)
    expected = np.sqrt(disc) / A
    inner = expected > 0.3 * expected.max()
    assert inner.sum() > 200
    err = np.abs(got[inner] - expected[inner]).sum() / expected[inner].sum()
    assert err < 0.005, err


@pytest.mark.parametrize("mode", ["line", "poly"])
def test_fast_renderer_agrees_with_siddon_on_phantom(mode) -> None:
    from xctreg.data.phantom import make_phantom

    vol = make_phantom()
    cam = Camera(1020.0, 96, 96, (4.2, 4.2))
    r = Renderer(vol, cam, RenderConfig(mode=mode, voxel_mm=None))
    p = torch.tensor(sample_params(3, seed=7), dtype=torch.float32)
    fast = r(p)
    ref = r.intensity_to_image(r.siddon_line_integrals(p.double()).float())
    assert _rel_l1(fast, ref) < 0.01


def test_backends_agree_and_batching_is_consistent(small_phantom) -> None:
    p = torch.tensor(sample_params(3, seed=2), dtype=torch.float32)
    rn = Renderer(small_phantom, CAM64, RenderConfig(backend="numba"))
    rt = Renderer(small_phantom, CAM64, RenderConfig(backend="torch"))
    a, b = rn(p), rt(p)
    assert a.shape == (3, 1, 64, 64)
    assert _rel_l1(a, b) < 0.005
    one = torch.cat([rn(p[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(one, a)
    T = params_to_matrix(p.double(), rn.reference).float()
    torch.testing.assert_close(rn(T), a, rtol=1e-4, atol=1e-4)


def test_low_precision_torch_backend(small_phantom) -> None:
    p = torch.tensor(sample_params(1, seed=3), dtype=torch.float32)
    full = Renderer(small_phantom, CAM64)(p)
    half = Renderer(small_phantom, CAM64, RenderConfig(backend="torch"), dtype=torch.bfloat16)(p)
    assert half.dtype == torch.bfloat16
    assert _rel_l1(half.float(), full) < 0.03


def _central_differences(loss, p0: torch.Tensor, h: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """Central differences of a scalar ``loss`` at the (1, 6) parameters ``p0``, steps ``h`` (deg, mm)."""
    fd = np.zeros(6)
    for i in range(6):
        e = torch.zeros(1, 6, dtype=torch.float64)
        e[0, i] = h[i]
        with torch.no_grad():
            fd[i] = float(loss(p0 + e) - loss(p0 - e)) / (2 * h[i])
    return fd


@pytest.mark.parametrize(("backend", "mode"), [("numba", "poly"), ("torch", "poly"), ("numba", "line")])
def test_pose_gradient_matches_finite_differences(small_phantom, backend, mode) -> None:
    """Analytic pose gradients against central differences; the numba backward also with one
    channel (line mode), as it sums the channels before differentiating."""
    cam = Camera(1020.0, 48, 48, (8.0, 8.0))
    r = Renderer(small_phantom, cam, RenderConfig(mode=mode, backend=backend, step_mm=2.0))
    target = r(torch.tensor([[2.0, -3.0, 4.0, 5.0, -6.0, 8.0]]))
    weights = torch.randn(target.shape, generator=torch.Generator().manual_seed(0))

    def loss(q: torch.Tensor) -> torch.Tensor:
        img = r(q)
        return ((img - target) * weights).sum() + ((img - target) ** 2).sum()

    p0 = torch.tensor([[4.0, -1.0, 2.0, 9.0, -2.0, 20.0]], dtype=torch.float64, requires_grad=True)
    loss(p0).backward()
    grad = p0.grad[0].numpy()
    fd = _central_differences(loss, p0.detach(), np.array([0.05, 0.05, 0.05, 0.1, 0.1, 0.5]))
    np.testing.assert_allclose(grad, fd, rtol=0.03, atol=0.02 * np.abs(fd).max())


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_pose_gradient_on_a_ct_cut_off_through_tissue(backend) -> None:
    """A CT whose faces cut through tissue (as every chest CT's cranio-caudal ends do): the
    gradient includes how the rays' entry and exit through those faces move with the pose
    (bug: the entry/exit distances were held fixed; on the chest grid that turned the sign
    of the rz and ty gradients). A smooth volume, fine steps and small differences: rays
    that graze a cut-off face make the image curve fast with the pose."""
    n, sp = (32, 32, 12), 6.0
    k, j, i = np.meshgrid(*[np.arange(m) for m in n[::-1]], indexing="ij")
    x, y, z = (i - n[0] / 2) * sp, (j - n[1] / 2) * sp, (k - n[2] / 2) * sp
    hu = 300 * np.exp(-((x - 20) ** 2 + (y + 10) ** 2 + (z - 15) ** 2) / (2 * 25**2)) + 200 * np.cos(x / 35) * np.cos(z / 30)
    vol = Volume(hu.astype(np.float32), [sp] * 3, origin=[-v / 2 * sp for v in n])  # tissue on every face
    r = Renderer(vol, Camera(1020.0, 40, 40, (8.0, 8.0)), RenderConfig(mode="line", backend=backend, step_mm=0.5))
    weights = torch.rand(1, 1, 40, 40, generator=torch.Generator().manual_seed(1))

    def loss(q: torch.Tensor) -> torch.Tensor:
        return (r(q) * weights).mean()

    p0 = torch.tensor([[3.0, -2.0, 4.0, 5.0, 6.0, 10.0]], dtype=torch.float64, requires_grad=True)
    loss(p0).backward()
    grad = p0.grad[0].numpy()
    fd = _central_differences(loss, p0.detach(), np.array([0.01, 0.01, 0.01, 0.02, 0.02, 0.05]))
    np.testing.assert_allclose(grad, fd, rtol=0.02, atol=0.01 * np.abs(fd).max())
    # refinement's choice, face_gradient=False: the same image, the faces' term left out
    held = Renderer(vol, r.camera, RenderConfig(mode="line", backend=backend, step_mm=0.5, face_gradient=False))
    q = p0.detach().clone().requires_grad_(True)
    out = held(q)
    torch.testing.assert_close(out, r(p0.detach()))
    (out * weights).mean().backward()
    assert np.abs(q.grad[0].numpy() - fd).max() > 0.3 * np.abs(fd).max()


def test_torch_backend_gradient_wrt_volume(small_phantom) -> None:
    r = Renderer(small_phantom, CAM64, RenderConfig(backend="torch"))
    r.channels.requires_grad_(True)
    r(torch.zeros(1, 6)).sum().backward()
    assert r.channels.grad is not None and r.channels.grad.abs().sum() > 0


def test_renderers_of_one_volume_share_its_material_volume(small_phantom) -> None:
    """Refinement builds several renderers of one CT level: they compute its material densities
    once, yet each owns the torch copy that may require grad, and the mode still decides C."""
    from xctreg.physics.materials import material_densities

    a = Renderer(small_phantom, CAM64, RenderConfig(voxel_mm=None))
    b = Renderer(small_phantom, CAM64.resized(32, 32), RenderConfig(voxel_mm=None, kvp=70.0))
    assert a._chan_np is b._chan_np
    want = material_densities(torch.from_numpy(small_phantom.hu.astype(np.float32)))
    np.testing.assert_allclose(a._chan_np, want.numpy(), rtol=1e-6, atol=1e-7)
    line = Renderer(small_phantom, CAM64, RenderConfig(voxel_mm=None, mode="line"))
    assert line._chan_np.shape[-1] == 1 and line.channels.shape[0] == 1
    a.channels.requires_grad_(True)
    assert a.channels is not b.channels and not b.channels.requires_grad
    torch.testing.assert_close(a.channels.detach(), b.channels)


def test_empty_and_bad_inputs(small_phantom) -> None:
    with pytest.raises(XctregError, match="empty"):
        Renderer(Volume(np.zeros((0, 4, 4)), [1, 1, 1]), CAM64)
    r = Renderer(small_phantom, CAM64)
    with pytest.raises(XctregError, match="poses must be"):
        r(torch.zeros(2, 5))
    with pytest.raises(XctregError, match="outside"):
        Camera(1020.0, 64, 64, (1.0, 1.0), (80.0, 10.0))


def test_marker_left_projects_right_and_head_top() -> None:
    """A bright bead at the patient's left (head) lands in the right (top) half of the AP DRR."""
    hu = np.full((48, 48, 48), -1000.0, dtype=np.float32)
    hu[30:34, 22:26, 36:40] = 3000.0  # (z, y, x): x index 36..39 > centre (left), z 30..33 > centre (head)
    vol = Volume(hu, spacing=[4.0] * 3, origin=[-94.0] * 3)
    img = Renderer(vol, Camera(1020.0, 64, 64, (4.0, 4.0)), RenderConfig(mode="line"))(torch.zeros(1, 6))[0, 0]
    row, col = np.unravel_index(int(img.argmax()), img.shape)
    assert col > 32 and row < 32


@pytest.mark.parametrize("mode", ["poly", "line"])
def test_numba_one_pass_jacobian_equals_the_two_pass_backward(small_phantom, mode: str) -> None:
    """The forward pass that keeps each ray's Jacobian (one march) gives the same images and
    pose gradients as the separate backward kernel (two marches), with 3 channels and 1, with
    and without the faces' term; without a gradient no Jacobian is kept."""
    from xctreg.render.march import _NumbaMarch

    p = torch.tensor(sample_params(2, seed=4), dtype=torch.float64)
    w = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    for face in (True, False):
        r = Renderer(small_phantom, CAM64, RenderConfig(mode=mode, backend="numba", face_gradient=face))
        out = []
        for two_pass in (False, True):
            _NumbaMarch.two_pass = two_pass
            try:
                q = p.clone().requires_grad_(True)
                img = r(q)
                (img * w).sum().backward()
            finally:
                _NumbaMarch.two_pass = False
            out.append((img.detach(), q.grad))
        torch.testing.assert_close(out[0][0], out[1][0], rtol=0, atol=0)
        torch.testing.assert_close(out[0][1], out[1][1], rtol=1e-4, atol=1e-5 * float(out[1][1].abs().max()))
        assert float(out[1][1].abs().max()) > 0
    rays = r.rays(p)
    with torch.no_grad():
        L = _NumbaMarch.apply(rays.origin, rays.direction, rays.t0, rays.t1, r._chan_np, r.step_mm)
    assert L.grad_fn is None


def test_out_of_memory_falls_back_to_smaller_ray_chunks(small_phantom, monkeypatch) -> None:
    """The torch backend, told it is out of memory above 1024 rays per chunk, halves its chunks
    until they fit, warns once, keeps the smaller chunk, and renders the same image; any other
    error still raises."""
    import xctreg.render.drr as drr

    r = Renderer(small_phantom, CAM64, RenderConfig(backend="torch", chunk_rays=8192))
    p = torch.tensor(sample_params(1, seed=1), dtype=torch.float32)
    want = r(p)
    real, seen = drr.march_torch, []

    def tight(vol, rays, step, chunk):  # noqa: ANN001, ANN202
        seen.append(chunk)
        if chunk > 1024:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(vol, rays, step, chunk)

    monkeypatch.setattr(drr, "march_torch", tight)
    with pytest.warns(UserWarning, match="smaller ray chunks"):
        got = r(p)
    torch.testing.assert_close(got, want)
    assert seen == [8192, 4096, 2048, 1024]
    seen.clear()
    r(p)
    assert seen == [1024]  # kept

    def broken(vol, rays, step, chunk):  # noqa: ANN001, ANN202
        raise RuntimeError("something else")

    monkeypatch.setattr(drr, "march_torch", broken)
    with pytest.raises(RuntimeError, match="something else"):
        r(p)


def test_oblique_ct_renders_as_the_same_ct_resampled_axis_aligned(small_phantom) -> None:
    """A CT with oblique direction cosines (gantry tilt, a rotated reconstruction) renders like
    the same anatomy resampled onto an axis-aligned grid: the renderer follows the affine."""
    import SimpleITK as sitk

    from xctreg.geometry import euler_to_rotmat
    from xctreg.metrics import ncc

    R = euler_to_rotmat(torch.tensor([[12.0, -8.0, 25.0]], dtype=torch.float64))[0].numpy()
    centre = np.asarray(small_phantom.center)
    img = small_phantom.to_sitk()
    img.SetDirection(R.flatten().tolist())
    # keep the grid's centre where it was: origin' = c - R (c - origin)
    img.SetOrigin((centre - R @ (centre - np.asarray(small_phantom.origin))).tolist())
    oblique = Volume.from_sitk(img)
    grid = sitk.Image([96, 96, 96], sitk.sitkFloat32)
    grid.SetSpacing([6.0, 6.0, 6.0])
    grid.SetOrigin((centre - 6.0 * 95 / 2).tolist())
    straight = Volume.from_sitk(sitk.Resample(img, grid, sitk.Transform(), sitk.sitkLinear, -1000.0))
    assert not np.allclose(oblique.affine[:3, :3], np.diag(np.diag(oblique.affine[:3, :3])))
    from xctreg.geometry import PoseReference

    ref = PoseReference(tuple(centre), 750.0)  # one reference for all three: the same world frame
    p = torch.tensor([[3.0, -4.0, 5.0, 6.0, -5.0, 10.0]])
    a = Renderer(oblique, CAM64, RenderConfig(voxel_mm=None), reference=ref)(p)[0, 0]
    b = Renderer(straight, CAM64, RenderConfig(voxel_mm=None), reference=ref)(p)[0, 0]
    assert float(ncc(a, b)) > 0.99
    # and it is not the same image as the CT with its direction ignored
    c = Renderer(small_phantom, CAM64, RenderConfig(voxel_mm=None), reference=ref)(p)[0, 0]
    assert float(ncc(a, c)) < float(ncc(a, b)) - 0.02


@pytest.mark.parametrize(("shape_zyx", "spacing_xyz"), [((4, 4, 4), (40.0, 40.0, 40.0)), ((12, 400, 400), (0.3, 0.3, 10.0))])
def test_tiny_and_extremely_anisotropic_cts_render(shape_zyx, spacing_xyz) -> None:
    """A 4³ CT and a 0.3 × 0.3 × 10 mm one (a thick-slice scout) pass the CT checks and render
    finite images at the default pyramid level (itself still anisotropic: about 2.9 × 2.9 × 10 mm)
    whose total is that of the exact Siddon integral through the same level within 5%, with the
    structures where Siddon puts them."""
    from xctreg.geometry import PoseReference
    from xctreg.io import check_ct
    from xctreg.metrics import ncc

    hu = np.full(shape_zyx, -1000.0, np.float32)
    nz, ny, nx = shape_zyx
    hu[nz // 4 : nz - nz // 4, ny // 4 : ny - ny // 4, nx // 4 : nx - nx // 4] = 40.0
    hu[nz // 2, ny // 2 :, nx // 2 :] = 700.0  # some bone: three values, not a mask
    vol = Volume(hu, list(spacing_xyz))
    check_ct(vol, name="CT")
    r = Renderer(vol, Camera(1020.0, 48, 48, (4.0, 4.0)), RenderConfig(mode="line"), reference=PoseReference(tuple(vol.center), 750.0))
    p = torch.tensor([[5.0, -5.0, 10.0, 4.0, -3.0, 0.0]])
    a = r(p)[0, 0]
    exact = r.siddon_line_integrals(p.double())[0, 0].float()
    assert torch.isfinite(a).all() and float(exact.max()) > 0
    assert float(a.sum()) == pytest.approx(float(exact.sum()), rel=0.05)
    assert float(ncc(a, exact)) > 0.9
