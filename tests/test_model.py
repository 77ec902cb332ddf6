from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ednn_dask.errors import ModelFormatError, StoreNotFoundError
from ednn_dask.model import FORMAT_VERSION, ModelSpec, TileModel, write_metadata

SPEC = ModelSpec(kind="dense", focus=(10, 10), context=(2, 2), boundary="periodic", channels=1,
                 target="energy", target_unit="eV", spacing=(0.1, 0.1), spacing_unit="angstrom",
                 output_scale=2.0, provenance={"seed": 1})


def test_metadata_round_trip():
    props = SPEC.to_metadata()
    assert all(k.startswith("ednn.") for k in props)
    assert json.loads(props["ednn.focus"]) == [10, 10]
    back = ModelSpec.from_metadata(props)
    assert back == SPEC and back.provenance == {"seed": 1}


@settings(max_examples=60, deadline=None)
@given(
    ndim=st.integers(1, 3),
    data=st.data(),
)
def test_metadata_round_trip_any_geometry(ndim, data):
    ints = st.integers(1, 64)
    spec = ModelSpec(
        kind=data.draw(st.sampled_from(["dense", "tile"])),
        focus=tuple(data.draw(ints) for _ in range(ndim)),
        context=tuple(data.draw(st.integers(0, 32)) for _ in range(ndim)),
        boundary=data.draw(st.one_of(st.just("periodic"), st.floats(-1e6, 1e6))),
        channels=data.draw(st.integers(1, 8)),
        target=data.draw(st.text(min_size=1, max_size=12)),
        spacing=data.draw(st.one_of(st.none(), st.tuples(*[st.floats(1e-3, 10)] * ndim))),
        output_scale=data.draw(st.floats(-1e3, 1e3)),
    )
    assert ModelSpec.from_metadata(spec.to_metadata()) == spec


@settings(max_examples=80, deadline=None)
@given(key=st.sampled_from(["focus", "context", "boundary", "channels", "kind", "spacing",
                            "format_version", "input_scale"]),
       junk=st.one_of(st.text(max_size=8), st.integers(-5, 5).map(str),
                      st.just("[1.5]"), st.just("null"), st.just("[]"), st.just('"x"')))
def test_malformed_metadata_raises_model_format_error(key, junk):
    _parse_or_model_format_error({**SPEC.to_metadata(), f"ednn.{key}": junk})


def _parse_or_model_format_error(props: dict[str, str]) -> None:
    try:
        ModelSpec.from_metadata(props)
    except ModelFormatError:
        pass  # the only acceptable failure


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"ednn.format_version": str(FORMAT_VERSION + 1)}, "newer than this ednn-dask"),
        ({"ednn.focus": "not json"}, "is not JSON"),
        ({"ednn.kind": '"sparse"'}, "'dense' or 'tile'"),
        ({"ednn.context": "[1, 2, 3]"}, "3 values"),
        ({"ednn.spacing": "[0.1, -1]"}, "positive"),
        ({"ednn.boundary": '"reflect"'}, "boundary"),
    ],
)
def test_bad_metadata(change, match):
    props = {**SPEC.to_metadata(), **change}
    with pytest.raises(ModelFormatError, match=match):
        ModelSpec.from_metadata(props)


def test_missing_metadata_names_the_keys():
    props = SPEC.to_metadata()
    del props["ednn.focus"]
    with pytest.raises(ModelFormatError, match=r"ednn\.focus.*write_metadata"):
        ModelSpec.from_metadata(props)


def test_load_refuses_missing_and_non_onnx_files(tmp_path):
    with pytest.raises(StoreNotFoundError, match="does not exist"):
        TileModel.load(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelFormatError, match="not a loadable ONNX model"):
        TileModel.load(bad)


def test_foreign_model_gets_metadata(tmp_path, mlp2d):
    """A tile-only graph without our metadata is refused, then accepted once tagged."""
    import onnx

    _, _, tile_model = mlp2d
    proto = onnx.load_from_string(tile_model.onnx_bytes)
    del proto.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(proto, str(foreign))
    with pytest.raises(ModelFormatError, match="no ednn metadata"):
        TileModel.load(foreign)
    write_metadata(foreign, tile_model.spec)
    loaded = TileModel.load(foreign)
    field = np.random.default_rng(0).choice([-1.0, 1.0], size=(6, 6)).astype(np.float32)
    from ednn_dask import contributions

    np.testing.assert_array_equal(contributions(field, loaded), contributions(field, tile_model))


def test_model_pickles_without_a_session(mlp2d):
    import pickle

    _, model, _ = mlp2d
    model.session(1)
    clone = pickle.loads(pickle.dumps(model))
    assert clone.sha256 == model.sha256 and clone.spec == model.spec
    assert len(pickle.dumps(model)) < len(model.onnx_bytes) + 4096


def test_channel_mismatch_in_metadata_is_refused(tmp_path, cnn2d):
    _, model = cnn2d
    path = tmp_path / "wrong.onnx"
    path.write_bytes(model.onnx_bytes)
    from dataclasses import replace

    write_metadata(path, replace(model.spec, channels=3))
    with pytest.raises(ModelFormatError, match="2 channels but ednn.channels says 3"):
        TileModel.load(path)


ATOMISTIC = ModelSpec(kind="dense", focus=(32, 32), context=(16, 16), boundary="periodic",
                      channels=3, target="energy", target_unit="eV", spacing=(0.1, 0.1),
                      spacing_unit="angstrom",
                      raster={"gamma": 0.2, "cutoff": 1.0, "species": [5, 6, 7]},
                      reference_energies={"B": -40.0, "C": -57.5, "N": -87.5})


def test_atomistic_metadata_round_trip():
    back = ModelSpec.from_metadata(ATOMISTIC.to_metadata())
    assert back == ATOMISTIC and back.raster["species"] == [5, 6, 7]
    assert ModelSpec.from_metadata(SPEC.to_metadata()).raster is None  # older models: none


@settings(max_examples=80, deadline=None)
@given(key=st.sampled_from(["raster", "reference_energies"]),
       junk=st.one_of(
           st.text(max_size=8), st.just("null"), st.just("[]"), st.just('{"gamma": 0.2}'),
           st.just('{"gamma": -1, "cutoff": 1, "species": [6, 6, 6]}'),
           st.just('{"gamma": 0.2, "cutoff": 1, "species": [6]}'),
           st.just('{"gamma": 0.2, "cutoff": 1, "species": ["C", 1, 2]}'),
           st.just('{"C": "x"}'), st.just('{"C": NaN}'),
           st.dictionaries(st.text(max_size=3), st.floats(allow_nan=True)).map(json.dumps)))
def test_malformed_atomistic_metadata_raises_model_format_error(key, junk):
    _parse_or_model_format_error({**ATOMISTIC.to_metadata(), f"ednn.{key}": junk})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"ednn.raster": '{"gamma": 0.2, "cutoff": 1.0, "species": [6]}'}, "one element per"),
        ({"ednn.raster": '{"gamma": 0, "cutoff": 1.0, "species": [5, 6, 7]}'}, "gamma > 0"),
        ({"ednn.raster": '{"gamma": 0.2, "species": [5, 6, 7]}'}, "exactly the keys"),
        ({"ednn.reference_energies": '{"C": null}'}, "malformed"),
        ({"ednn.spacing": "null"}, "needs ednn.spacing"),
    ],
)
def test_bad_atomistic_metadata(change, match):
    with pytest.raises(ModelFormatError, match=match):
        ModelSpec.from_metadata({**ATOMISTIC.to_metadata(), **change})


def test_external_weights_inside_the_folder_are_inlined_outside_refused(tmp_path, mlp2d):
    import onnx

    _, dense, _ = mlp2d
    proto = onnx.load(str(dense.path))
    (tmp_path / "models").mkdir()
    inside = tmp_path / "models" / "inside.onnx"
    onnx.save(proto, str(inside), save_as_external_data=True, location="inside.weights",
              size_threshold=0)
    assert (tmp_path / "models" / "inside.weights").stat().st_size > 1000
    loaded = TileModel.load(inside)
    x = np.random.default_rng(0).choice([-1.0, 1.0], size=(1, 1, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(loaded.run(x), dense.run(x))
    assert b"inside.weights" not in loaded.onnx_bytes  # workers get one self-contained blob

    escaping = onnx.load(str(inside), load_external_data=False)
    (tmp_path / "elsewhere.bin").write_bytes((tmp_path / "models" / "inside.weights").read_bytes())
    for tensor in escaping.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../elsewhere.bin"
    outside = tmp_path / "models" / "outside.onnx"
    onnx.save(escaping, str(outside))
    with pytest.raises(ModelFormatError, match="outside the model folder"):
        TileModel.load(outside)
