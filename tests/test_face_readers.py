"""Face-model readers on tiny fabricated files in the exact on-disk formats (formats.md, section B3)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from stylerig.errors import AssetError, InputError
from stylerig.face import readers
from stylerig.face.model import MorphableModel
from stylerig.face.readers import (
    BFM2009_LICENCE,
    BFM2017_LICENCE,
    DEEP3D_FRONT_LICENCE,
    load_face_model,
    orient_outward,
    read_bfm2009,
    read_bfm2017,
    read_deep3d_front,
)

# ----------------------------------------------------------------------------------------------------
# Fabrication: a 5x5 grid "face" bulging towards +z (a cap), so outward normals have z > 0.

NX = 5
N_FULL = NX * NX  # BFM09 vertices (real: 53,490)
TRIM = np.array([i for i in range(N_FULL) if i not in (0, N_FULL - 1)])  # drop two corners (real: 53,215)
# Front crop: the inner 3x3 grid, as positions in TRIM, in a shuffled order (real: 35,709).
FRONT_FULL = np.array([j * NX + i for j in (1, 2, 3) for i in (1, 2, 3)])
FRONT_POS = np.array([int(np.nonzero(f == TRIM)[0][0]) for f in FRONT_FULL])[[4, 0, 8, 2, 6, 1, 3, 7, 5]]
K_PCA, EXP_DIM = 100, 79
KEYPOINTS = (np.arange(68) * 5) % FRONT_POS.size  # 0-based front-crop ids


def grid_vertices_dm() -> np.ndarray:
    xs = np.linspace(-0.4, 0.4, NX)
    x, y = np.meshgrid(xs, xs)  # vertex id = row * NX + col; x varies along a row
    z = 0.3 - (x**2 + y**2)
    return np.stack([x, y, z], -1).reshape(-1, 3) + np.array([0.05, -0.02, 0.1])  # off-centre


def grid_triangles_ccw() -> np.ndarray:
    """0-based triangles, counter-clockwise seen from +z (outside)."""
    tris = []
    for j in range(NX - 1):
        for i in range(NX - 1):
            a, b, c, d = j * NX + i, j * NX + i + 1, (j + 1) * NX + i, (j + 1) * NX + i + 1
            tris += [(a, b, d), (a, d, c)]
    return np.array(tris)


def restrict(tri: np.ndarray, keep: np.ndarray, n: int) -> np.ndarray:
    new = np.full(n, -1)
    new[keep] = np.arange(keep.size)
    t = new[tri]
    return t[(t >= 0).all(1)]


def write_exp_pca(path: Path, exp_mu: np.ndarray, exp_pc: np.ndarray, dim: int | None = None) -> None:
    with open(path, "wb") as f:
        np.array([exp_pc.shape[0] if dim is None else dim], dtype="<i4").tofile(f)
        exp_mu.astype("<f4").tofile(f)
        exp_pc.astype("<f4").tofile(f)  # [exp_dim, 3T], component-major


def transfer_bfm09(s: SimpleNamespace) -> dict[str, np.ndarray]:
    """The arrays Deep3DFaceRecon's transferBFM09 would save for the fabricated BFM09 files."""
    sel = TRIM[FRONT_POS]
    id_base = (s.shapePC * s.shapeEV.reshape(1, -1) / 1e5)[:, :80].reshape(-1, 3, 80)[sel].reshape(-1, 80)
    tex_base = (s.texPC * s.texEV.reshape(1, -1))[:, :80].reshape(-1, 3, 80)[sel].reshape(-1, 80)
    ex_base = (
        (s.expPC.T * s.std_exp.reshape(1, -1) / 1e5)[:, :64].reshape(-1, 3, 64)[FRONT_POS].reshape(-1, 64)
    )
    return {
        "meanshape": (s.shapeMU.reshape(-1, 3) / 1e5)[sel].reshape(1, -1).astype(np.float32),
        "meantex": s.texMU.reshape(-1, 3)[sel].reshape(1, -1).astype(np.float32),
        "idBase": id_base.astype(np.float32),
        "exBase": ex_base.astype(np.float32),
        "texBase": tex_base.astype(np.float32),
        **s.info,
    }


@pytest.fixture
def bfm(tmp_path: Path) -> SimpleNamespace:
    """A Deep3DFaceRecon-style BFM/ folder with every file, in the exact on-disk formats."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "BFM"
    folder.mkdir()
    s = SimpleNamespace(folder=folder, verts=grid_vertices_dm())
    s.shapeMU = (s.verts * 1e5).reshape(-1, 1).astype(np.float32)  # micrometres
    s.shapePC = rng.standard_normal((3 * N_FULL, K_PCA)).astype(np.float32)
    s.shapeEV = np.linspace(2e4, 1e3, K_PCA, dtype=np.float32).reshape(-1, 1)
    s.texMU = rng.uniform(50, 200, (3 * N_FULL, 1)).astype(np.float32)
    s.texPC = rng.standard_normal((3 * N_FULL, K_PCA)).astype(np.float32)
    s.texEV = np.linspace(30, 1, K_PCA, dtype=np.float32).reshape(-1, 1)
    s.tl_cw = grid_triangles_ccw()[:, [0, 2, 1]]  # BFM09 is clockwise
    scipy.io.savemat(
        folder / "01_MorphableModel.mat",
        {
            "shapeMU": s.shapeMU,
            "shapePC": s.shapePC,
            "shapeEV": s.shapeEV,
            "texMU": s.texMU,
            "texPC": s.texPC,
            "texEV": s.texEV,
            "tl": (s.tl_cw + 1).astype(np.float64),
            "segbin": np.zeros((N_FULL, 4), np.uint8),
        },
    )
    s.expMU = rng.standard_normal(3 * TRIM.size).astype(np.float32)
    s.expPC = rng.standard_normal((EXP_DIM, 3 * TRIM.size)).astype(np.float32)
    s.std_exp = np.linspace(5e3, 10, EXP_DIM).astype(np.float32)
    write_exp_pca(folder / "Exp_Pca.bin", s.expMU, s.expPC)
    (folder / "std_exp.txt").write_text(" ".join(f"{v:.6f}" for v in s.std_exp) + "\n")
    s.std_exp = np.loadtxt(folder / "std_exp.txt").astype(np.float32)
    scipy.io.savemat(folder / "BFM_exp_idx.mat", {"trimIndex": (TRIM + 1).astype(np.uint16).reshape(-1, 1)})
    scipy.io.savemat(folder / "BFM_front_idx.mat", {"idx": (FRONT_POS + 1).astype(np.float32).reshape(-1, 1)})
    s.front_tri = restrict(s.tl_cw, TRIM[FRONT_POS], N_FULL)  # clockwise too
    s.skin = (np.arange(FRONT_POS.size) % 3 != 0).astype(np.float32)
    s.info = {
        "tri": (s.front_tri + 1).astype(np.float32),
        "keypoints": (KEYPOINTS + 1).astype(np.float32).reshape(1, -1),
        "skinmask": s.skin.reshape(1, -1),
        "point_buf": np.full((FRONT_POS.size, 8), s.front_tri.shape[0] + 1, np.float32),
    }
    scipy.io.savemat(folder / "facemodel_info.mat", s.info)
    s.front_mat = tmp_path / "BFM_model_front.mat"
    scipy.io.savemat(s.front_mat, transfer_bfm09(s))
    s.mat = folder / "01_MorphableModel.mat"
    s.files = {
        "exp_pca_bin": folder / "Exp_Pca.bin",
        "std_exp_txt": folder / "std_exp.txt",
        "exp_idx_mat": folder / "BFM_exp_idx.mat",
        "front_idx_mat": folder / "BFM_front_idx.mat",
        "info_mat": folder / "facemodel_info.mat",
    }
    return s


def read09(s: SimpleNamespace, **kw: object) -> MorphableModel:
    f = {**s.files, **kw}
    return read_bfm2009(s.mat, f.pop("exp_pca_bin"), f.pop("std_exp_txt"), **f)


@pytest.fixture
def bfm17(tmp_path: Path) -> SimpleNamespace:
    """A statismo Basel 2017 .h5 with K = 6 / 4 / 5 components (shape / expression / colour)."""
    rng = np.random.default_rng(1)
    s = SimpleNamespace(path=tmp_path / "model2017-1_bfm_nomouth.h5", verts=grid_vertices_dm())
    s.shape_mean = (s.verts * 100).reshape(-1).astype(np.float32)  # millimetres
    s.exp_mean = rng.normal(0, 0.5, 3 * N_FULL).astype(np.float32)  # a mean deformation, mm
    s.color_mean = rng.uniform(0.2, 0.8, 3 * N_FULL).astype(np.float32)
    s.groups = {}
    with h5py.File(s.path, "w") as f:
        for name, k, mean in (
            ("shape", 6, s.shape_mean),
            ("expression", 4, s.exp_mean),
            ("color", 5, s.color_mean),
        ):
            q, _ = np.linalg.qr(rng.standard_normal((3 * N_FULL, k)))
            var = np.linspace(4.0, 1.0, k).astype(np.float32)
            s.groups[name] = (q.astype(np.float32), var)
            f[f"{name}/model/mean"] = mean
            f[f"{name}/model/pcaBasis"] = q.astype(np.float32)
            f[f"{name}/model/pcaVariance"] = var
            f[f"{name}/model/noiseVariance"] = np.float32(0.0)
            f[f"{name}/representer/points"] = s.verts.T.astype(np.float32) * 100
            f[f"{name}/representer/cells"] = grid_triangles_ccw()[:, [0, 2, 1]].T.astype(
                np.uint32
            )  # clockwise
            f[f"{name}/version/majorVersion"] = 0
            f[f"{name}/version/minorVersion"] = 9
    s.landmarks = (np.arange(68) * 7) % N_FULL
    return s


def face_normals(model: MorphableModel) -> torch.Tensor:
    v, t = model.mean_shape, model.triangles
    return torch.linalg.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])


# ----------------------------------------------------------------------------------------------------
# Winding.


@pytest.mark.parametrize("flip", [False, True])
def test_orient_outward_makes_cap_normals_point_out(flip: bool) -> None:
    v = torch.from_numpy(grid_vertices_dm())
    tri = torch.from_numpy(grid_triangles_ccw())
    given = tri[:, [0, 2, 1]] if flip else tri
    out = orient_outward(v, given)
    assert out.dtype == torch.int64
    assert torch.equal(out, tri)  # CCW input unchanged; CW input has columns 1 and 2 swapped


# ----------------------------------------------------------------------------------------------------
# Basel 2009 (transferBFM09 build).


def test_bfm2009_front_values_units_and_sigma_scaling(bfm: SimpleNamespace) -> None:
    m = read09(bfm)
    sel = TRIM[FRONT_POS]
    assert m.name == "bfm2009-front" and m.licence == BFM2009_LICENCE
    assert m.num_vertices == FRONT_POS.size
    assert m.num_components == {"identity": 80, "expression": 64, "reflectance": 80}
    # Mean shape: um -> dm at the selected vertices, re-centred on the mean vertex.
    want = bfm.verts[sel] - bfm.verts[sel].mean(0)
    torch.testing.assert_close(m.mean_shape, torch.from_numpy(want).float(), atol=1e-6, rtol=0)
    # One basis entry by hand: output vertex 2, coordinate y (row 3*2+1), component 7.
    f = sel[2]
    assert m.id_basis[3 * 2 + 1, 7].item() == pytest.approx(
        bfm.shapePC[3 * f + 1, 7] * bfm.shapeEV[7, 0] / 1e5, rel=1e-5
    )
    want_id = (bfm.shapePC * bfm.shapeEV.T / 1e5)[:, :80][(3 * sel[:, None] + np.arange(3)).ravel()]
    np.testing.assert_allclose(m.id_basis.numpy(), want_id, rtol=1e-5, atol=1e-9)
    # Expression: Exp_Pca component-major basis on the trim, selected by idx, times std_exp, um -> dm.
    e = FRONT_POS[5]
    want_e = bfm.expPC[3, 3 * e + 2] * bfm.std_exp[3] / 1e5
    assert m.exp_basis[3 * 5 + 2, 3].item() == pytest.approx(want_e, rel=1e-5)
    want_exp = (bfm.expPC.T * bfm.std_exp / 1e5)[:, :64][(3 * FRONT_POS[:, None] + np.arange(3)).ravel()]
    np.testing.assert_allclose(m.exp_basis.numpy(), want_exp, rtol=1e-5, atol=1e-9)
    # Albedo: 0-255 -> [0, 1].
    np.testing.assert_allclose(m.mean_albedo.numpy(), bfm.texMU.reshape(-1, 3)[sel] / 255, rtol=1e-6)
    want_alb = (bfm.texPC * bfm.texEV.T / 255)[:, :80][(3 * sel[:, None] + np.arange(3)).ravel()]
    np.testing.assert_allclose(m.alb_basis.numpy(), want_alb, rtol=1e-5, atol=1e-9)
    # Indices: 0-based int64, landmarks from facemodel_info keypoints, skin mask from skinmask.
    assert m.landmarks.dtype == torch.int64 and torch.equal(m.landmarks, torch.from_numpy(KEYPOINTS))
    assert torch.equal(m.skin_mask, torch.from_numpy(bfm.skin != 0))
    assert m.triangles.dtype == torch.int64 and m.triangles.min() == 0
    assert {frozenset(t) for t in m.triangles.tolist()} == {frozenset(t) for t in bfm.front_tri.tolist()}


def test_bfm2009_winding_is_fixed_to_point_outwards(bfm: SimpleNamespace) -> None:
    for model in (
        read09(bfm),
        read09(bfm, crop=False),
        read09(bfm, info_mat=None, landmarks=[i % 9 for i in range(68)]),
    ):
        assert (face_normals(model)[:, 2] > 0).all(), model.name


def test_bfm2009_front_crop_selects_the_right_vertices(bfm: SimpleNamespace) -> None:
    m = read09(bfm)
    full = read09(bfm, crop=False)
    # Same geometry up to the re-centring: the crop's vertex k is the full trim's vertex FRONT_POS[k].
    a = m.mean_shape - m.mean_shape[0]
    b = full.mean_shape[FRONT_POS] - full.mean_shape[FRONT_POS[0]]
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    rows = torch.from_numpy((3 * FRONT_POS[:, None] + np.arange(3)).ravel())
    torch.testing.assert_close(m.id_basis, full.id_basis[rows])
    torch.testing.assert_close(m.exp_basis, full.exp_basis[rows])


def test_bfm2009_without_crop_uses_trim_triangles_and_maps_landmarks_through_idx(
    bfm: SimpleNamespace,
) -> None:
    m = read09(bfm, crop=False)
    assert m.name == "bfm2009" and m.num_vertices == TRIM.size
    # tl restricted to the trim (two corners removed -> 2 triangles each) and re-indexed.
    assert m.num_triangles == 32 - 4
    want = {frozenset(t) for t in restrict(bfm.tl_cw, TRIM, N_FULL).tolist()}
    assert {frozenset(t) for t in m.triangles.tolist()} == want
    assert torch.equal(m.landmarks, torch.from_numpy(FRONT_POS[KEYPOINTS]))
    skin = np.zeros(TRIM.size, bool)
    skin[FRONT_POS] = bfm.skin != 0
    assert torch.equal(m.skin_mask, torch.from_numpy(skin))


def test_bfm2009_equals_deep3d_front_file_built_from_it(bfm: SimpleNamespace) -> None:
    a, b = read09(bfm), read_deep3d_front(bfm.front_mat)
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], rtol=1e-5, atol=1e-7, msg=k)


def test_bfm2009_landmarks_need_info_or_explicit_indices(bfm: SimpleNamespace) -> None:
    with pytest.raises(AssetError, match="facemodel_info"):
        read09(bfm, info_mat=None)
    m = read09(bfm, info_mat=None, front_idx_mat=None, landmarks=np.arange(68) % TRIM.size)
    assert m.num_vertices == TRIM.size and m.skin_mask.all()
    with pytest.raises(InputError, match="68"):
        read09(bfm, info_mat=None, landmarks=[0, 1, 2])


def test_bfm2009_exp_pca_size_is_validated_from_header(bfm: SimpleNamespace, tmp_path: Path) -> None:
    bad = tmp_path / "Exp_Pca.bin"
    write_exp_pca(bad, bfm.expMU, bfm.expPC, dim=80)  # header claims one more component than stored
    with pytest.raises(AssetError, match="bytes") as ei:
        read09(bfm, exp_pca_bin=bad)
    assert "3DFace" in (ei.value.hint or "")
    write_exp_pca(bad, bfm.expMU, bfm.expPC, dim=-3)
    with pytest.raises(AssetError, match="header"):
        read09(bfm, exp_pca_bin=bad)
    bad.write_bytes(bfm.files["exp_pca_bin"].read_bytes()[:-4])
    with pytest.raises(AssetError, match="truncated"):
        read09(bfm, exp_pca_bin=bad)


def test_bfm2009_inconsistent_index_files_raise_asset_error(bfm: SimpleNamespace, tmp_path: Path) -> None:
    bad = tmp_path / "BFM_exp_idx.mat"
    scipy.io.savemat(bad, {"trimIndex": np.array([[1], [2], [N_FULL + 5]], np.uint16)})
    with pytest.raises(AssetError, match="trimIndex"):
        read09(bfm, exp_idx_mat=bad)
    std = tmp_path / "std_exp.txt"
    std.write_text("1 2 3\n")
    with pytest.raises(AssetError, match="79"):
        read09(bfm, std_exp_txt=std)
    nan = tmp_path / "01_MorphableModel.mat"
    d = scipy.io.loadmat(bfm.mat)
    d["shapeMU"][4, 0] = np.nan
    scipy.io.savemat(nan, {k: v for k, v in d.items() if not k.startswith("__")})
    with pytest.raises(AssetError, match="NaN"):
        read_bfm2009(
            nan, bfm.files["exp_pca_bin"], bfm.files["std_exp_txt"], exp_idx_mat=bfm.files["exp_idx_mat"]
        )


# ----------------------------------------------------------------------------------------------------
# Deep3DFaceRecon BFM_model_front.mat.


def test_deep3d_front_values(bfm: SimpleNamespace) -> None:
    m = read_deep3d_front(bfm.front_mat)
    d = transfer_bfm09(bfm)
    assert m.name == "bfm2009-front" and m.licence == DEEP3D_FRONT_LICENCE
    ms = d["meanshape"].reshape(-1, 3)
    np.testing.assert_allclose(m.mean_shape.numpy(), ms - ms.mean(0), atol=1e-6)  # recenter=True
    np.testing.assert_allclose(m.mean_albedo.numpy(), d["meantex"].reshape(-1, 3) / 255, rtol=1e-6)
    np.testing.assert_allclose(m.alb_basis.numpy(), d["texBase"] / 255, rtol=1e-6)
    np.testing.assert_array_equal(m.id_basis.numpy(), d["idBase"])
    np.testing.assert_array_equal(m.exp_basis.numpy(), d["exBase"])
    assert torch.equal(m.landmarks, torch.from_numpy(KEYPOINTS))
    assert (face_normals(m)[:, 2] > 0).all()


def test_deep3d_front_takes_tri_and_keypoints_from_facemodel_info(
    bfm: SimpleNamespace, tmp_path: Path
) -> None:
    d = {k: v for k, v in transfer_bfm09(bfm).items() if k not in ("tri", "keypoints", "skinmask")}
    d["idBase"] = d["idBase"][:, :10]  # fewer components are padded with zeros
    lone = tmp_path / "lone" / "BFM_model_front.mat"
    lone.parent.mkdir()
    scipy.io.savemat(lone, d)
    with pytest.raises(AssetError, match="facemodel_info"):
        read_deep3d_front(lone)
    m = read_deep3d_front(lone, info_mat=bfm.files["info_mat"])
    assert m.num_components["identity"] == 10 and not m.id_basis[:, 10:].any()
    assert torch.equal(m.landmarks, torch.from_numpy(KEYPOINTS))
    assert torch.equal(m.skin_mask, torch.from_numpy(bfm.skin != 0))


# ----------------------------------------------------------------------------------------------------
# Basel 2017.


def test_bfm2017_values_units_sigma_and_padding(bfm17: SimpleNamespace) -> None:
    m = read_bfm2017(bfm17.path, landmarks=bfm17.landmarks)
    assert m.name == "bfm2017" and m.licence == BFM2017_LICENCE
    assert m.num_components == {"identity": 6, "expression": 4, "reflectance": 5}
    q, var = bfm17.groups["shape"]
    np.testing.assert_allclose(m.id_basis[:, :6].numpy(), q * np.sqrt(var) / 100, rtol=1e-5, atol=1e-9)
    assert not m.id_basis[:, 6:].any()
    q, var = bfm17.groups["expression"]
    np.testing.assert_allclose(m.exp_basis[:, :4].numpy(), q * np.sqrt(var) / 100, rtol=1e-5, atol=1e-9)
    q, var = bfm17.groups["color"]
    np.testing.assert_allclose(m.alb_basis[:, :5].numpy(), q * np.sqrt(var), rtol=1e-5, atol=1e-9)
    mean = (bfm17.shape_mean + bfm17.exp_mean).reshape(-1, 3) / 100
    np.testing.assert_allclose(m.mean_shape.numpy(), mean - mean.mean(0), atol=1e-6)
    np.testing.assert_allclose(m.mean_albedo.numpy(), bfm17.color_mean.reshape(-1, 3))
    assert torch.equal(m.landmarks, torch.from_numpy(bfm17.landmarks))
    assert m.skin_mask.all() and m.num_triangles == 32
    assert (face_normals(m)[:, 2] > 0).all()  # the file's clockwise cells were re-wound


def test_bfm2017_landmarks_from_txt_npy_or_required(bfm17: SimpleNamespace, tmp_path: Path) -> None:
    txt, npy = tmp_path / "lm.txt", tmp_path / "lm.npy"
    txt.write_text("\n".join(map(str, bfm17.landmarks)))
    np.save(npy, bfm17.landmarks)
    for lm in (txt, str(npy), torch.from_numpy(bfm17.landmarks)):
        assert torch.equal(
            read_bfm2017(bfm17.path, landmarks=lm).landmarks, torch.from_numpy(bfm17.landmarks)
        )
    with pytest.raises(AssetError, match="landmarks="):
        read_bfm2017(bfm17.path)
    txt.write_text("1 2 3")
    with pytest.raises(AssetError, match="68"):
        read_bfm2017(bfm17.path, landmarks=txt)
    with pytest.raises(InputError, match="range"):
        read_bfm2017(bfm17.path, landmarks=np.full(68, N_FULL))


# ----------------------------------------------------------------------------------------------------
# load_face_model: dispatch and cache.


def test_load_face_model_dispatches_each_kind(
    bfm: SimpleNamespace, bfm17: SimpleNamespace, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    assert load_face_model(bfm.front_mat, cache_dir=cache).licence == DEEP3D_FRONT_LICENCE
    m = load_face_model(bfm.mat, cache_dir=cache)  # extras found beside it by their standard names
    assert (m.name, m.num_vertices, m.licence) == ("bfm2009-front", FRONT_POS.size, BFM2009_LICENCE)
    assert load_face_model(bfm.folder, cache_dir=cache, crop=False).name == "bfm2009"
    m17 = load_face_model(bfm17.path, cache_dir=cache, landmarks=bfm17.landmarks)
    assert m17.name == "bfm2017" and m17.source == str(bfm17.path.resolve())
    st = tmp_path / "m.safetensors"
    m17.save(st)
    back = load_face_model(st)
    for k, v in m17.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    with pytest.raises(InputError, match="landmarks"):
        load_face_model(bfm.front_mat, cache_dir=cache, landmarks=[1])


def test_load_face_model_builtin() -> None:
    pytest.importorskip("stylerig.face.procedural")
    for spec in (None, "builtin", "procedural"):
        assert isinstance(load_face_model(spec), MorphableModel)


def test_load_face_model_missing_extras_name_file_and_source(bfm: SimpleNamespace) -> None:
    bfm.files["exp_pca_bin"].unlink()
    with pytest.raises(AssetError, match="Exp_Pca.bin") as ei:
        load_face_model(bfm.mat, use_cache=False)
    assert "github.com/Juyong/3DFace" in (ei.value.hint or "")


def test_cache_is_used_on_second_load(bfm: SimpleNamespace, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    first = load_face_model(bfm.front_mat, cache_dir=cache)
    entries = list((cache / "face-models").glob("*.safetensors"))
    assert len(entries) == 1 and not list((cache / "face-models").glob("*.tmp"))

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("the reader ran although the cache is valid")

    monkeypatch.setattr(readers, "read_deep3d_front", boom)
    second = load_face_model(bfm.front_mat, cache_dir=cache)
    assert second.source == str(bfm.front_mat.resolve()) and second.licence == DEEP3D_FRONT_LICENCE
    for k, v in first.state_dict().items():
        assert torch.equal(v, second.state_dict()[k]), k
    # A changed source file (new mtime) is a new key, so the reader runs again.
    os.utime(bfm.front_mat, ns=(1, 10**18))
    with pytest.raises(AssertionError, match="reader ran"):
        load_face_model(bfm.front_mat, cache_dir=cache)


def test_corrupt_cache_entry_is_rebuilt(bfm: SimpleNamespace, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STYLERIG_CACHE_DIR", str(tmp_path / "envcache"))
    load_face_model(bfm.front_mat)  # default cache dir from the environment
    (entry,) = (tmp_path / "envcache" / "face-models").glob("*.safetensors")
    entry.write_bytes(b"\x00garbage" * 10)
    calls = []
    real = readers.read_deep3d_front
    monkeypatch.setattr(readers, "read_deep3d_front", lambda *a, **k: calls.append(1) or real(*a, **k))
    with pytest.warns(UserWarning, match="rebuilding"):
        m = load_face_model(bfm.front_mat)
    assert calls == [1] and m.num_vertices == FRONT_POS.size
    assert MorphableModel.load(entry).num_vertices == FRONT_POS.size  # rewritten valid


def test_use_cache_false_writes_nothing(bfm: SimpleNamespace, tmp_path: Path) -> None:
    load_face_model(bfm.front_mat, cache_dir=tmp_path / "c", use_cache=False)
    assert not (tmp_path / "c").exists()


# ----------------------------------------------------------------------------------------------------
# Bad files: always one AssetError.


def test_missing_path_names_it(tmp_path: Path) -> None:
    p = tmp_path / "nope.mat"
    for call in (lambda: load_face_model(p), lambda: read_deep3d_front(p), lambda: read_bfm2017(p)):
        with pytest.raises(AssetError, match="nope.mat") as ei:
            call()
        assert "faces.dmi.unibas.ch/bfm" in (ei.value.hint or "")  # where to obtain it


def test_wrong_kind_files(bfm: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="neither"):
        load_face_model(bfm.files["front_idx_mat"])
    other = tmp_path / "x.h5"
    with h5py.File(other, "w") as f:
        f["foo/bar"] = np.zeros(3)
    with pytest.raises(AssetError, match="statismo"):
        load_face_model(other)
    weird = tmp_path / "model.obj"
    weird.write_text("v 0 0 0\n")
    with pytest.raises(AssetError, match=r"\.obj"):
        load_face_model(weird)
    with pytest.raises(AssetError, match="not a Deep3DFaceRecon"):
        read_deep3d_front(bfm.mat)
    with pytest.raises(AssetError, match="not a Basel 2009"):
        read_bfm2009(bfm.front_mat, *list(bfm.files.values())[:2], exp_idx_mat=bfm.files["exp_idx_mat"])


@pytest.mark.parametrize(
    "which", ["front", "bfm09", "exp_pca", "exp_idx", "front_idx", "info", "bfm17", "cache"]
)
def test_truncated_or_garbage_files_raise_asset_error(
    which: str, bfm: SimpleNamespace, bfm17: SimpleNamespace, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    target, load = {
        "front": (bfm.front_mat, lambda: load_face_model(bfm.front_mat, use_cache=False)),
        "bfm09": (bfm.mat, lambda: load_face_model(bfm.mat, use_cache=False)),
        "exp_pca": (bfm.files["exp_pca_bin"], lambda: load_face_model(bfm.mat, use_cache=False)),
        "exp_idx": (bfm.files["exp_idx_mat"], lambda: load_face_model(bfm.mat, use_cache=False)),
        "front_idx": (bfm.files["front_idx_mat"], lambda: load_face_model(bfm.mat, use_cache=False)),
        "info": (bfm.files["info_mat"], lambda: read09(bfm)),
        "bfm17": (
            bfm17.path,
            lambda: load_face_model(bfm17.path, landmarks=bfm17.landmarks, use_cache=False),
        ),
        "cache": (
            tmp_path / "m.safetensors",
            lambda: load_face_model(tmp_path / "m.safetensors", cache_dir=cache),
        ),
    }[which]
    if which == "cache":
        read_deep3d_front(bfm.front_mat).save(target)
    good = target.read_bytes()
    rng = np.random.default_rng(2)
    for data in (
        b"",
        good[:10],
        good[: len(good) // 2],
        good[: len(good) * 9 // 10],
        good[:-9],  # savemat pads variables to 8 bytes: 1 byte less can still be a valid file
        rng.bytes(len(good)),
    ):
        target.write_bytes(data)
        with pytest.raises(AssetError):
            load()
    target.write_bytes(good)
    load()  # the fixture itself is fine
