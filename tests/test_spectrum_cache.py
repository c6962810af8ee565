"""spekpy's spectra kept in the user cache, so that a fresh process does not recompute them."""

from __future__ import annotations

import numpy as np
import pytest

from xctreg.physics import spectrum as S


def test_spectrum_is_cached_on_disk_and_a_damaged_entry_is_recomputed(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XCTREG_CACHE_DIR", str(tmp_path))
    S._spekpy.cache_clear()
    path = S.spectrum_cache_path(70.0, 2.5, 12.0)
    assert not path.exists()
    k, f = S._spekpy(70.0, 2.5, 12.0)
    assert path.is_file()
    S._spekpy.cache_clear()
    calls = []
    import spekpy

    monkeypatch.setattr(spekpy, "Spek", lambda *a, **kw: calls.append(1) or pytest.fail("spekpy called"))
    k2, f2 = S._spekpy(70.0, 2.5, 12.0)  # from the file, not spekpy
    assert np.array_equal(k, k2) and np.array_equal(f, f2) and not calls
    monkeypatch.undo()
    monkeypatch.setenv("XCTREG_CACHE_DIR", str(tmp_path))
    path.write_bytes(path.read_bytes()[:50])  # damaged: computed again, and the file repaired
    S._spekpy.cache_clear()
    k3, f3 = S._spekpy(70.0, 2.5, 12.0)
    assert np.allclose(k3, k) and np.allclose(f3, f)
    with np.load(path, allow_pickle=False) as z:
        assert np.array_equal(z["k"], k3)
    S._spekpy.cache_clear()


def test_attenuation_is_cached_on_disk_and_a_damaged_entry_is_recomputed(tmp_path, monkeypatch) -> None:
    """xraydb's import costs a fresh process about a second: its μ/ρ tables are kept too."""
    from xctreg.physics import materials as M

    monkeypatch.setenv("XCTREG_CACHE_DIR", str(tmp_path))
    e = (30.0, 45.5, 60.0)
    M._mass_attenuation_cached.cache_clear()
    path = M.attenuation_cache_path("bone", e)
    assert not path.exists()
    mu = M.mass_attenuation("bone", np.array(e))
    assert path.is_file() and mu.shape == (3,) and np.all(mu > 0)
    M._mass_attenuation_cached.cache_clear()
    import xraydb

    monkeypatch.setattr(xraydb, "mu_elam", lambda *a, **kw: pytest.fail("xraydb called"))
    assert np.array_equal(M.mass_attenuation("bone", np.array(e)), mu)  # from the file
    monkeypatch.undo()
    monkeypatch.setenv("XCTREG_CACHE_DIR", str(tmp_path))
    path.write_bytes(b"PK\x03\x04 damaged")
    M._mass_attenuation_cached.cache_clear()
    assert np.allclose(M.mass_attenuation("bone", np.array(e)), mu)
    assert M.attenuation_cache_path("bone", e) == path and path.stat().st_size > 100  # repaired
    assert M.attenuation_cache_path("bone", (30.0,)) != path  # other energies, another entry
    M._mass_attenuation_cached.cache_clear()


def test_a_readable_cache_entry_of_the_wrong_shape_is_replaced(tmp_path, monkeypatch) -> None:
    """A well-formed npz that does not hold what the caller needs is recomputed and rewritten,
    not recomputed again in every process."""
    from xctreg.physics import materials as M

    monkeypatch.setenv("XCTREG_CACHE_DIR", str(tmp_path))
    e = (40.0, 50.0)
    M._mass_attenuation_cached.cache_clear()
    path = M.attenuation_cache_path("soft_tissue", e)
    path.parent.mkdir(parents=True)
    np.savez(path, mu=np.array([1.0, 2.0, 3.0]))  # three values for two energies
    mu = M.mass_attenuation("soft_tissue", np.array(e))
    assert mu.shape == (2,) and np.all(mu > 0)
    with np.load(path, allow_pickle=False) as z:
        assert np.allclose(z["mu"], mu)
    M._mass_attenuation_cached.cache_clear()
    S._spekpy.cache_clear()
    sp = S.spectrum_cache_path(80.0, 3.0, 12.0)
    sp.parent.mkdir(parents=True)
    np.savez(sp, k=np.arange(5.0), f=np.arange(4.0))  # mismatched lengths
    k, f = S._spekpy(80.0, 3.0, 12.0)
    assert k.shape == f.shape and k.size > 5
    with np.load(sp, allow_pickle=False) as z:
        assert np.array_equal(z["k"], k)
    S._spekpy.cache_clear()
