"""Property-based tests (hypothesis) of the geometry (issue 14): projection then back-projection,
SE(3) composition and inversion, and the pose JSON reader on random valid and invalid documents.

The params -> matrix -> params round trip for any view is in tests/test_views.py
(``test_params_round_trip_for_any_view``); the fixed-seed versions of the first two are in
tests/test_geometry.py. Independent checks here use plain numpy (quaternions, homogeneous
products, ``np.linalg.inv``), never the library's own helpers.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from xctreg.errors import XctregError
from xctreg.geometry import (
    PARAM_NAMES,
    Camera,
    Pose,
    PoseReference,
    backproject,
    compose_se3,
    invert_se3,
    is_rigid,
    params_to_matrix,
    project,
    read_pose,
    write_pose,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


# --------------------------------------------------------------------------- strategies
@st.composite
def rotations(draw: st.DrawFn) -> np.ndarray:
    """Any proper rotation (3x3), from a random quaternion (independent of the library)."""
    q = np.array(draw(st.tuples(*[_floats(-1.0, 1.0)] * 4)))
    n = float(np.linalg.norm(q))
    assume(n > 0.1)
    w, x, y, z = q / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


@st.composite
def rigid(draw: st.DrawFn, trans_mm: float = 3000.0) -> np.ndarray:
    """A 4x4 rigid transform: any rotation, translation within ±``trans_mm``."""
    T = np.eye(4)
    T[:3, :3] = draw(rotations())
    T[:3, 3] = draw(st.tuples(*[_floats(-trans_mm, trans_mm)] * 3))
    return T


@st.composite
def cameras(draw: st.DrawFn) -> Camera:
    """Any valid camera: sdd, image size, anisotropic pixel spacing, principal point or the centre."""
    h, w = draw(st.integers(1, 2048)), draw(st.integers(1, 2048))
    sp = (draw(_floats(0.01, 5.0)), draw(_floats(0.01, 5.0)))
    pp = draw(st.none() | st.tuples(_floats(-0.5, w - 0.5), _floats(-0.5, h - 0.5)))
    return Camera(draw(_floats(50.0, 3000.0)), h, w, sp, pp)


references = st.builds(
    PoseReference,
    isocenter_mm=st.tuples(*[_floats(-500.0, 500.0)] * 3),
    sid_mm=_floats(100.0, 2000.0),
    view_deg=st.tuples(*[_floats(-180.0, 180.0)] * 3) | st.sampled_from(["ap", "pa", "lat-left", "lat-right"]),
)
# unique Euler angles (ry strictly inside ±90), so the params come back as given
unique_params = st.tuples(
    _floats(-179.9, 179.9), _floats(-89.9, 89.9), _floats(-179.9, 179.9), *[_floats(-500.0, 500.0)] * 3
).map(np.array)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


def _json_round_trip(d: Any) -> Any:
    return json.loads(json.dumps(d))


# --------------------------------------------------------------------------- projection
@FAST
@given(
    camera=cameras(),
    T=rigid(),
    pts_cam=st.lists(st.tuples(_floats(-3.0, 3.0), _floats(-3.0, 3.0), _floats(1.0, 5000.0)), min_size=1, max_size=6),
)
def test_projected_point_lies_on_the_backprojected_ray_of_its_pixel(camera: Camera, T: np.ndarray, pts_cam) -> None:
    """Any point in front of any camera projects to the pixel whose back-projected ray passes through it."""
    # points in front of the source: z > 0 in camera coordinates, up to 3 z off the principal ray
    pc = np.array([(a * z, b * z, z) for a, b, z in pts_cam])
    R, t = T[:3, :3], T[:3, 3]
    world = (pc - t) @ R  # x_world = Rᵀ (x_cam - t), in row form
    uv, depth = project(_t(world), _t(T), camera)
    # independent pinhole check (SPEC §3): u = sdd/dx x/z + cx (columns), v = sdd/dy y/z + cy (rows)
    dy, dx = camera.pixel_spacing_mm
    cx = (camera.width - 1) / 2 if camera.principal_point_px is None else camera.principal_point_px[0]
    cy = (camera.height - 1) / 2 if camera.principal_point_px is None else camera.principal_point_px[1]
    expected = np.stack([camera.sdd_mm / dx * pc[:, 0] / pc[:, 2] + cx, camera.sdd_mm / dy * pc[:, 1] / pc[:, 2] + cy], -1)
    # round-off: the world coordinates carry ~eps * |x| mm, magnified by f / z in pixels
    size = 1.0 + np.linalg.norm(world, axis=-1) + np.linalg.norm(t)
    tol_px = 1e-11 * (camera.sdd_mm / dx + camera.sdd_mm / dy) * size / pc[:, 2]
    assert np.all(np.abs(uv.numpy() - expected) <= tol_px[:, None] + 1e-12 * np.abs(expected)), (uv, expected)
    assert np.all(np.abs(depth.numpy() - pc[:, 2]) <= 1e-11 * size)

    src, d = backproject(uv, _t(T), camera)
    src, d = src.numpy(), d.numpy()
    np.testing.assert_allclose(src, -R.T @ t, atol=1e-9 * (1 + np.abs(t).max()))  # the source is the camera centre
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1.0, atol=1e-12)
    rel = world - src
    along = np.einsum("nk,nk->n", rel, d)
    dist = np.linalg.norm(rel - along[:, None] * d, axis=-1)
    scale = np.maximum(1.0, np.maximum(np.linalg.norm(world, axis=-1), np.linalg.norm(src)))
    assert np.all(dist <= 1e-9 * scale), (dist, scale)  # 1e-6 mm per metre of coordinates
    assert np.all(along > 0)  # in front of the source, along the beam: not on the ray's backward extension
    np.testing.assert_allclose(along, np.linalg.norm(pc, axis=-1), rtol=1e-9, atol=1e-11 * scale.max())


# --------------------------------------------------------------------------- SE(3)
@FAST
@given(batch=st.sampled_from([None, 1, 3]), data=st.data())
def test_se3_inverse_and_composition_laws(batch: int | None, data: st.DataObject) -> None:
    """invert is an involution and the true inverse; compose applies B then A; (AB)⁻¹ = B⁻¹A⁻¹; results stay rigid."""
    n = batch or 1
    A_np = np.stack([data.draw(rigid()) for _ in range(n)])
    B_np = np.stack([data.draw(rigid()) for _ in range(n)])
    if batch is None:
        A_np, B_np = A_np[0], B_np[0]
    A, B = _t(A_np), _t(B_np)
    eye = np.broadcast_to(np.eye(4), A_np.shape)
    tol = 1e-9 * max(1.0, float(np.abs(A_np).max()), float(np.abs(B_np).max()))

    inv_A = invert_se3(A)
    assert inv_A.shape == A.shape
    np.testing.assert_allclose(inv_A.numpy(), np.linalg.inv(A_np), atol=tol)
    np.testing.assert_allclose(invert_se3(inv_A).numpy(), A_np, atol=tol)
    np.testing.assert_allclose(compose_se3(A, inv_A).numpy(), eye, atol=tol)
    np.testing.assert_allclose(compose_se3(inv_A, A).numpy(), eye, atol=tol)
    np.testing.assert_allclose(
        invert_se3(compose_se3(A, B)).numpy(), compose_se3(invert_se3(B), inv_A).numpy(), atol=tol * 4
    )
    # order: compose(A, B) applies B first, then A (homogeneous points, plain numpy)
    x = np.array([[10.0, -20.0, 30.0, 1.0], [-400.0, 5.0, 900.0, 1.0]])
    AB = compose_se3(A, B).numpy().reshape(-1, 4, 4)
    for k in range(AB.shape[0]):
        a, b = A_np.reshape(-1, 4, 4)[k], B_np.reshape(-1, 4, 4)[k]
        np.testing.assert_allclose(AB[k] @ x.T, a @ (b @ x.T), atol=1e-6)
        assert is_rigid(AB[k]) and is_rigid(invert_se3(A).numpy().reshape(-1, 4, 4)[k])
    assert np.array_equal(inv_A.numpy()[..., 3, :], eye[..., 3, :])  # bottom row exactly 0 0 0 1


# --------------------------------------------------------------------------- pose JSON: valid documents
@st.composite
def valid_pose_docs(draw: st.DrawFn) -> tuple[dict[str, Any], PoseReference | None, np.ndarray]:
    """A valid pose document, the reference passed beside it (or None) and the matrix it means.

    Kinds: params + reference in the document; params with the reference passed; the matrix
    with a reference (in the document or passed); the matrix alone; matrix and params that agree.
    Some carry extra keys, which the reader keeps.
    """
    ref = draw(references)
    kind = draw(st.sampled_from(["params+ref", "params|arg", "matrix+ref", "matrix|arg", "matrix", "both"]))
    if kind.startswith("params") or draw(st.booleans()):
        T = params_to_matrix(_t(draw(unique_params)), ref).numpy()
    else:
        T = draw(rigid(trans_mm=5000.0))  # any rotation, near gimbal lock too
    full = Pose(T, ref).to_dict()
    doc: dict[str, Any] = {}
    if kind.startswith("params") or kind == "both":
        doc["params"] = full["params"]
    if kind.startswith("matrix") or kind == "both":
        doc["T_cam_from_world"] = full["T_cam_from_world"]
    passed = None
    if kind in ("params+ref", "matrix+ref", "both"):
        doc["reference"] = full["reference"]
    elif kind.endswith("|arg"):
        passed = ref
    if draw(st.booleans()):
        doc["note"] = draw(st.text(max_size=10))
    return _json_round_trip(doc), passed, T


@FAST
@given(case=valid_pose_docs())
def test_valid_pose_documents_are_read_and_round_trip_through_to_dict(case) -> None:
    """Every valid pose document is read as the pose it means, and to_dict -> from_dict is then a fixed point."""
    doc, passed, T = case
    pose = Pose.from_dict(copy.deepcopy(doc), reference=passed)
    scale = max(1.0, float(np.abs(T[:3, 3]).max()))
    np.testing.assert_allclose(pose.T_cam_from_world[:3, :3], T[:3, :3], atol=1e-9)
    np.testing.assert_allclose(pose.T_cam_from_world[:3, 3], T[:3, 3], atol=1e-9 * scale)
    if "T_cam_from_world" in doc:  # a given matrix is taken as it is
        np.testing.assert_array_equal(pose.T_cam_from_world, np.asarray(doc["T_cam_from_world"]))
    if "params" in doc and "T_cam_from_world" not in doc:
        assert pose.reference is not None
        p_doc = np.array([doc["params"][k] for k in PARAM_NAMES])
        np.testing.assert_array_equal(pose.T_cam_from_world, params_to_matrix(_t(p_doc), pose.reference).numpy())
    assert is_rigid(pose.T_cam_from_world)

    out = _json_round_trip(pose.to_dict())
    if "note" in doc:
        assert out["note"] == doc["note"]
    if pose.reference is None:
        assert set(out) - {"note"} == {"T_cam_from_world"}
    else:
        assert PoseReference.from_dict(out["reference"]) == pose.reference
        # the written params mean the matrix to the reader's own agreement tolerance (1e-6); near
        # gimbal lock (ry = ±90° from the reference) matrix_to_params keeps only ~eps / cos(ry),
        # up to ~3e-7 at its lock threshold cos(ry) = 1e-9
        back = params_to_matrix(_t([out["params"][k] for k in PARAM_NAMES]), pose.reference).numpy()
        np.testing.assert_allclose(back[:3, :3], pose.T_cam_from_world[:3, :3], atol=1e-6)
        np.testing.assert_allclose(back[:3, 3], pose.T_cam_from_world[:3, 3], atol=1e-6 * scale)
        if "params" in doc:  # unique Euler angles: the same numbers back
            np.testing.assert_allclose([out["params"][k] for k in PARAM_NAMES], [doc["params"][k] for k in PARAM_NAMES],
                                       atol=1e-7 * scale)  # fmt: skip
    again = Pose.from_dict(copy.deepcopy(out))  # the writer's output is always readable, with no reference passed
    assert _json_round_trip(again.to_dict()) == out
    np.testing.assert_array_equal(again.T_cam_from_world, pose.T_cam_from_world)


@settings(max_examples=25, deadline=None)
@given(case=valid_pose_docs())
def test_write_pose_then_read_pose_gives_the_same_pose(tmp_path_factory, case) -> None:
    """write_pose / read_pose (the files) keep every valid pose exactly."""
    doc, passed, _ = case
    pose = Pose.from_dict(doc, reference=passed)
    path = tmp_path_factory.mktemp("pose") / "p.json"
    write_pose(path, pose)
    back = read_pose(path)
    np.testing.assert_array_equal(back.T_cam_from_world, pose.T_cam_from_world)
    assert back.to_dict() == _json_round_trip(pose.to_dict())


# --------------------------------------------------------------------------- pose JSON: invalid documents
def _not_a_number_text(s: str) -> bool:
    try:
        float(s)
    except (TypeError, ValueError):
        return True
    return False


# wrong types in place of a number: text that is no number, null, lists, objects (numeric strings
# and booleans are left to test_numeric_strings_and_booleans_are_refused below)
wrong_scalars = (
    st.text(max_size=6).filter(_not_a_number_text)
    | st.none()
    | st.lists(_floats(-10, 10), max_size=3)
    | st.dictionaries(st.text(max_size=3), _floats(-10, 10), max_size=2)
)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])


def _numeric_slots(doc: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(container, key) of every number in a pose document."""
    slots: list[tuple[Any, Any]] = []
    if isinstance(doc.get("params"), dict):
        slots += [(doc["params"], k) for k in PARAM_NAMES]
    if "T_cam_from_world" in doc:
        slots += [(row, j) for row in doc["T_cam_from_world"] for j in range(4)]
    if "reference" in doc:
        r = doc["reference"]
        slots += [(r["isocenter_mm"], j) for j in range(3)] + [(r, "sid_mm")] + [(r["view_deg"], j) for j in range(3)]
    return slots


@st.composite
def invalid_pose_docs(draw: st.DrawFn) -> tuple[Any, PoseReference | None, str]:
    """A pose document with one defect that must be refused, the reference passed beside it and what the defect is."""
    ref = draw(references)
    p = draw(unique_params)
    full = Pose.from_params(p, ref).to_dict()
    keys = draw(st.sampled_from([("params", "reference"), ("T_cam_from_world", "reference"), ("T_cam_from_world", "params", "reference")]))
    doc = _json_round_trip({k: full[k] for k in keys})
    passed = draw(st.sampled_from([None, ref]))
    defect = draw(st.sampled_from([
        "missing param", "no pose", "params without reference", "reference without isocenter",
        "wrong type", "wrong container", "not finite", "not rigid", "wrong shape", "disagree",
        "sid not positive", "bad view", "not an object",
    ]))  # fmt: skip
    if defect == "missing param":
        gone = draw(st.sampled_from(PARAM_NAMES))
        doc["params"] = {k: v for k, v in full["params"].items() if k != gone}
    elif defect == "no pose":
        doc.pop("params", None)
        doc.pop("T_cam_from_world", None)
    elif defect == "params without reference":
        doc = {"params": full["params"]}
        passed = None
    elif defect == "reference without isocenter":
        del doc["reference"]["isocenter_mm"]
    elif defect in ("wrong type", "not finite"):
        slots = _numeric_slots(doc)
        box, key = slots[draw(st.integers(0, len(slots) - 1))]
        box[key] = draw(wrong_scalars if defect == "wrong type" else non_finite)
    elif defect == "wrong container":
        key = draw(st.sampled_from(sorted(doc)))
        bad = st.text(max_size=5) | st.none() | _floats(-10, 10) | st.lists(_floats(-10, 10), max_size=3)
        if key == "params":  # an object without the six names
            bad = bad | st.dictionaries(st.text(max_size=3), _floats(-10, 10), max_size=3)
        doc[key] = draw(bad)
    elif defect == "not rigid":
        T = np.array(full["T_cam_from_world"])
        how = draw(st.sampled_from(["scale", "shear", "mirror", "last row"]))
        if how == "scale":
            T[:3, :3] *= draw(_floats(0.5, 0.99) | _floats(1.01, 2.0))
        elif how == "shear":
            i, j = draw(st.sampled_from([(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]))
            T[i, j] += draw(_floats(0.01, 1.0)) * draw(st.sampled_from([-1, 1]))
        elif how == "mirror":
            T[:3, draw(st.integers(0, 2))] *= -1  # orthonormal but det -1
        else:
            T[3, draw(st.integers(0, 3))] += draw(_floats(0.01, 10.0))
        doc = {"T_cam_from_world": T.tolist(), **{k: v for k, v in doc.items() if k != "T_cam_from_world"}}
    elif defect == "wrong shape":
        T = np.array(full["T_cam_from_world"])
        shapes = [T[:3], T[:, :3], T.ravel(), np.eye(5), T[None]]
        doc["T_cam_from_world"] = draw(st.sampled_from([a.tolist() for a in shapes] + [T[:2].tolist() + [[1, 2, 3]] * 2]))
    elif defect == "disagree":
        doc = {"T_cam_from_world": full["T_cam_from_world"], "params": dict(full["params"]), "reference": dict(full["reference"])}
        what = draw(st.sampled_from([*PARAM_NAMES, "sid_mm", "isocenter_mm"]))
        sign = draw(st.sampled_from([-1.0, 1.0]))
        if what.endswith("_deg"):
            doc["params"][what] += sign * draw(_floats(0.01, 10.0))
        elif what.endswith("_mm") and what in PARAM_NAMES:
            doc["params"][what] += sign * draw(_floats(0.1, 100.0))
        elif what == "sid_mm":
            doc["reference"]["sid_mm"] += draw(_floats(1.0, 100.0))
        else:
            doc["reference"]["isocenter_mm"] = [v + sign * 5.0 for v in doc["reference"]["isocenter_mm"]]
    elif defect == "sid not positive":
        doc["reference"]["sid_mm"] = draw(st.just(0.0) | _floats(-5000.0, -1e-9))
    elif defect == "bad view":
        view = doc["reference"]["view_deg"]
        beyond = [(180.0 + draw(_floats(0.01, 500.0))) * draw(st.sampled_from([-1, 1])), *view[1:]]  # |vx| > 180
        doc["reference"]["view_deg"] = draw(st.sampled_from([view[:2], [*view, 0.0], "sideways", [], beyond]))
    else:
        doc = draw(st.lists(_floats(-1, 1), max_size=3) | st.text(max_size=5) | st.none() | _floats(-1, 1))
    return doc, passed, defect


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case=invalid_pose_docs())
def test_invalid_pose_documents_raise_xctreg_error_and_nothing_else(case) -> None:
    """Every pose document with a defect (missing key, wrong type, NaN/inf, non-rigid, disagreeing, bad sid or view) raises a one-line XctregError."""
    doc, passed, defect = case
    try:
        pose = Pose.from_dict(copy.deepcopy(doc), reference=passed)
    except XctregError as exc:
        assert str(exc) and "\n" not in str(exc), f"{defect}: the message must be one line: {exc!r}"
        return
    except Exception as exc:  # anything else would reach the user as a traceback or an "internal" error
        pytest.fail(f"{defect}: {type(exc).__name__} instead of XctregError for {doc!r} (reference {passed}): {exc}")
    pytest.fail(f"{defect}: accepted {doc!r} (reference {passed}) as {pose.T_cam_from_world.tolist()}")


# arbitrary JSON values under the pose keys: the reader raises XctregError or gives a finite rigid pose
json_values = st.recursive(
    st.none() | st.booleans() | _floats(-1e4, 1e4) | st.integers(-10**6, 10**6) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=25,
)
pose_keys = st.sampled_from(["T_cam_from_world", "params", "reference", "isocenter_mm", "sid_mm", "view_deg", *PARAM_NAMES])


@settings(max_examples=300, deadline=None)
@given(
    doc=st.dictionaries(pose_keys, json_values, max_size=4) | json_values,
    passed=st.none() | st.just(PoseReference((1.0, 2.0, 3.0), 750.0)),
)
def test_arbitrary_json_gives_an_xctreg_error_or_a_rigid_pose(doc, passed) -> None:
    """Whatever JSON the file holds, the reader raises XctregError or returns a finite rigid pose; it never crashes otherwise."""
    try:
        pose = Pose.from_dict(doc, reference=passed)
    except XctregError:
        return
    except Exception as exc:
        pytest.fail(f"{type(exc).__name__} instead of XctregError for {doc!r}: {exc}")
    assert is_rigid(pose.T_cam_from_world), doc


# --------------------------------------------------------------------------- bugs these property tests found (fixed in geometry.py)
def _doc_with(edit) -> dict[str, Any]:
    d = Pose.from_params([1, 2, 3, 4, 5, 6], PoseReference((12.0, -30.0, 105.0), 750.0)).to_dict()
    d.pop("T_cam_from_world")
    edit(d)
    return d


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["params"].__setitem__("rx_deg", 10**400),
        lambda d: d["reference"].__setitem__("sid_mm", 10**400),
        lambda d: d["reference"]["isocenter_mm"].__setitem__(0, 10**400),
        lambda d: d["reference"]["view_deg"].__setitem__(0, 10**400),
        lambda d: d.__setitem__("T_cam_from_world", [[10**400, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
    ],
    ids=["param", "sid", "isocenter", "view", "matrix"],
)
def test_huge_json_integers_raise_xctreg_error(edit) -> None:
    """A JSON integer too large for a float (json.loads keeps it as an int) is refused with XctregError."""
    with pytest.raises(XctregError):
        Pose.from_dict(_doc_with(edit))


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["params"].__setitem__("rx_deg", "1.5"),
        lambda d: d["params"].__setitem__("tz_mm", True),
        lambda d: d["reference"].__setitem__("sid_mm", "750"),
        lambda d: d["reference"].__setitem__("isocenter_mm", ["0", "0", "0"]),
        lambda d: d["reference"].__setitem__("isocenter_mm", "123"),  # read as [1, 2, 3]
    ],
    ids=["param-string", "param-bool", "sid-string", "isocenter-strings", "isocenter-one-string"],
)
def test_numeric_strings_and_booleans_are_refused(edit) -> None:
    """A string or a boolean where the SPEC wants a number is a wrong type, refused like any other."""
    with pytest.raises(XctregError):
        Pose.from_dict(_doc_with(edit))


def test_finite_values_that_overflow_the_matrix_are_refused() -> None:
    """sid_mm and tz_mm each finite but summing past 1e308: refused, never a pose with an infinite matrix."""

    def edit(d: dict[str, Any]) -> None:
        d["reference"]["sid_mm"] = 1e308
        d["params"]["tz_mm"] = 1e308

    try:
        pose = Pose.from_dict(_doc_with(edit))
    except XctregError:
        return
    assert np.all(np.isfinite(pose.T_cam_from_world))


@pytest.mark.parametrize(
    ("params", "view", "decimals"),
    [([10.0, 20.0, 30.0, 4.0, 5.0, 6.0], "ap", 5), ([3.0, 0.5, 2.0, 1.0, 2.0, 3.0], "lat-left", 6)],
    ids=["ap-5-decimals", "lateral-6-decimals"],
)
def test_a_pose_read_from_a_rounded_matrix_is_written_readably(params, view, decimals) -> None:
    """A matrix printed to a few decimals (rigid within the reader's tolerance), read with an AP
    reference, gives a pose whose to_dict (matrix + derived params, e.g. simulate's pose JSON) reads back."""
    ap = PoseReference((12.0, -30.0, 105.0), 750.0)
    T = Pose.from_params(params, PoseReference((12.0, -30.0, 105.0), 750.0, view)).T_cam_from_world
    pose = Pose.from_dict({"T_cam_from_world": np.round(T, decimals).tolist()}, reference=ap)  # accepted: rigid to 1e-4
    Pose.from_dict(_json_round_trip(pose.to_dict()))  # raises "T_cam_from_world and params disagree"
