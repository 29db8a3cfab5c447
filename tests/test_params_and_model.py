"""The parameter layout, the MorphableModel contract and its safetensors round trip."""

from __future__ import annotations

import pytest
import torch

from stylerig import params
from stylerig.errors import AssetError, InputError
from stylerig.face import MorphableModel


def test_layout_is_contiguous_and_complete():
    assert params.NUM_PARAMS == 257
    starts = sorted((s.start, s.stop) for s in params.LAYOUT.values())
    assert starts[0][0] == 0 and starts[-1][1] == 257
    assert all(a[1] == b[0] for a, b in zip(starts, starts[1:], strict=False))
    assert params.LAYOUT["rotation"] == slice(251, 254)
    assert [params.mode_index(m).numel() for m in ("pose", "expression", "illumination", "all")] == [
        3,
        64,
        27,
        94,
    ]


def test_replace_and_concat_round_trip():
    p = torch.randn(4, 257, requires_grad=True)
    q = params.replace(p, "expression", torch.zeros(4, 64))
    assert (params.get(q, "expression") == 0).all()
    torch.testing.assert_close(params.get(q, "identity"), params.get(p, "identity"))
    assert torch.equal(params.concat(**params.split(p)), p)
    q.sum().backward()  # differentiable
    assert (params.get(p.grad, "expression") == 0).all() and (params.get(p.grad, "identity") == 1).all()
    with pytest.raises(InputError):
        params.get(p, "pose")  # a mode, not a group
    with pytest.raises(InputError):
        params.mode_groups("nope")


def test_model_geometry_and_padding(tiny_face):
    assert tiny_face.id_basis.shape == (3 * tiny_face.num_vertices, 80)
    assert tiny_face.num_components == {"identity": 10, "expression": 8, "reflectance": 5}
    p = params.zeros(1)
    params.get(p, "identity")[0, 0] = 1.0
    v, a = tiny_face(p)
    torch.testing.assert_close(v[0] - tiny_face.mean_shape, tiny_face.id_basis[:, 0].view(-1, 3))
    torch.testing.assert_close(a[0], tiny_face.mean_albedo)


def test_save_load_round_trip(tiny_face, tmp_path):
    path = tmp_path / "m.safetensors"
    tiny_face.save(path)
    back = MorphableModel.load(path)
    assert back.num_components == tiny_face.num_components and back.name == tiny_face.name
    for k, t in tiny_face.state_dict().items():
        assert torch.equal(back.state_dict()[k], t), k


def test_load_rejects_wrong_files(tmp_path):
    with pytest.raises(AssetError, match="not found"):
        MorphableModel.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(AssetError):
        MorphableModel.load(bad)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(other))
    with pytest.raises(AssetError, match="not a stylerig face model"):
        MorphableModel.load(other)


def test_constructor_validates(tiny_face):
    sd = tiny_face.state_dict()
    kw = dict(
        mean_shape=sd["mean_shape"],
        id_basis=sd["id_basis"],
        exp_basis=sd["exp_basis"],
        mean_albedo=sd["mean_albedo"],
        alb_basis=sd["alb_basis"],
        triangles=sd["triangles"],
        landmarks=sd["landmarks"],
        skin_mask=sd["skin_mask"],
    )
    with pytest.raises(InputError, match="out of range"):
        MorphableModel(**{**kw, "triangles": sd["triangles"] + 10_000})
    with pytest.raises(InputError, match="shape"):
        MorphableModel(**{**kw, "landmarks": sd["landmarks"][:67]})
    with pytest.raises(InputError, match="NaN"):
        MorphableModel(**{**kw, "mean_shape": sd["mean_shape"] * float("nan")})


def test_from_deep3d_reorders_groups_and_angles():
    c = torch.arange(257, dtype=torch.float64)[None]
    p = params.from_deep3d(c)
    assert params.get(p, "identity")[0, 0] == 0 and params.get(p, "expression")[0, 0] == 80
    assert params.get(p, "reflectance")[0, 0] == 144
    # Deep3DFaceRecon angles (x=pitch, y=yaw, z=roll) at 224..226 -> (yaw, pitch, roll).
    assert params.get(p, "rotation")[0].tolist() == [225.0, 224.0, 226.0]
    assert params.get(p, "illumination")[0, 0] == 227 and params.get(p, "translation")[0, 0] == 254
    # Same rotation: Deep3DFaceRecon's Rz(z) Ry(y) Rx(x) equals ours with (yaw, pitch, roll) = (y, x, z).
    from stylerig.render.camera import rotation_matrix

    x, y, z = 0.3, -0.2, 0.1
    rx = torch.tensor(
        [
            [1, 0, 0],
            [0, torch.cos(torch.tensor(x)), -torch.sin(torch.tensor(x))],
            [0, torch.sin(torch.tensor(x)), torch.cos(torch.tensor(x))],
        ]
    )
    ry = torch.tensor(
        [
            [torch.cos(torch.tensor(y)), 0, torch.sin(torch.tensor(y))],
            [0, 1, 0],
            [-torch.sin(torch.tensor(y)), 0, torch.cos(torch.tensor(y))],
        ]
    )
    rz = torch.tensor(
        [
            [torch.cos(torch.tensor(z)), -torch.sin(torch.tensor(z)), 0],
            [torch.sin(torch.tensor(z)), torch.cos(torch.tensor(z)), 0],
            [0, 0, 1],
        ]
    )
    torch.testing.assert_close(rotation_matrix(torch.tensor([[y, x, z]]))[0], rz @ ry @ rx)
    with pytest.raises(InputError):
        params.from_deep3d(torch.zeros(1, 256))


def test_malformed_saved_model_gives_asset_error(tiny_face, tmp_path):
    from stylerig.tensorfile import save_tensors

    sd = dict(tiny_face.state_dict())
    sd["id_basis"] = sd["id_basis"][:, 0].contiguous()  # 1-D: wrong shape
    path = tmp_path / "bad.safetensors"
    import json

    save_tensors(path, sd, {"config": json.dumps(tiny_face.config())})
    with pytest.raises(AssetError, match="malformed"):
        MorphableModel.load(path)
    cfg = tiny_face.config()
    cfg["num_components"] = {"identity": "x"}
    save_tensors(path, tiny_face.state_dict(), {"config": json.dumps(cfg)})
    with pytest.raises(AssetError, match="malformed"):
        MorphableModel.load(path)
