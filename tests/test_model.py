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


def _not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


def _as_json(strategy):
    return strategy.map(json.dumps)


NOT_JSON = st.text(max_size=8).filter(_not_json)
NOT_AN_INT_LIST = st.sampled_from(
    ["null", '"x"', "1.5", "true", "{}", "[]", "[1.5, 2]", "[true, 2]", '["2", 2]']
)
NOT_A_NUMBER = st.sampled_from(["null", "[1]", "{}", '"x"', "[]"])

# Per key: JSON values that must be refused, and what the error must say. Only values
# the format forbids; a value it allows (boundary 1.5, channels 2) has no place here.
BAD_VALUES = {
    "focus": (
        st.one_of(NOT_AN_INT_LIST, _as_json(st.integers(1, 64)),
                  _as_json(st.lists(st.integers(1, 64), min_size=3, max_size=4))),
        r"expected (a list of ints|an int)|ednn\.context has 2 values",
    ),
    "context": (
        st.one_of(NOT_AN_INT_LIST, _as_json(st.integers(0, 32)),
                  _as_json(st.lists(st.integers(0, 32), min_size=3, max_size=4)),
                  _as_json(st.tuples(st.integers(-32, -1), st.integers(0, 32)))),
        r"expected (a list of ints|an int)|ednn\.context (has \d values|must be >= 0)",
    ),
    "boundary": (
        st.one_of(st.sampled_from(["null", "[]", "[1.5]", "true", "{}", "NaN", "-Infinity"]),
                  _as_json(st.text(alphabet="abcxyz", max_size=8))),
        r"boundary must be 'periodic' or a number|constant boundary must be finite",
    ),
    "channels": (
        st.one_of(_as_json(st.integers(-5, 0)),
                  st.sampled_from(["null", "1.5", "true", '"3"', "[3]", "{}", "NaN"])),
        r"ednn\.channels must be >= 1|expected an int",
    ),
    "kind": (
        st.one_of(_as_json(st.text(max_size=8).filter(lambda s: s not in ("dense", "tile"))),
                  _as_json(st.integers()), st.sampled_from(["null", "true", "[]", "{}", "1.5"])),
        r"ednn\.kind must be 'dense' or 'tile'",
    ),
    "spacing": (
        st.one_of(_as_json(st.lists(st.floats(0.001, 10), max_size=4)
                           .filter(lambda v: len(v) != 2)),
                  _as_json(st.tuples(st.floats(-10, 0), st.floats(0.001, 10))),
                  st.sampled_from(["1.5", "true", '"x"', "[1e400, 1]", '["a", 1]'])),
        r"ednn\.spacing must be 2 positive numbers|malformed ednn metadata",
    ),
    "format_version": (
        st.one_of(_as_json(st.integers(FORMAT_VERSION + 1, 10**6)),
                  _as_json(st.integers(max_value=0)),
                  st.sampled_from(["null", "1.5", '"1"', "[1]", "{}"])),
        r"ednn\.format_version .* is not valid|newer than this ednn-dask",
    ),
    "input_scale": (
        st.one_of(st.sampled_from(["0", "0.0", "-0.0", "NaN", "Infinity", "-Infinity", "1e400"]),
                  NOT_A_NUMBER),
        r"ednn\.input_scale must (not be 0|be finite)|malformed ednn metadata",
    ),
}
RASTER = {"gamma": 0.2, "cutoff": 1.0, "species": [5, 6, 7]}
BAD_ATOMISTIC_VALUES = {
    "raster": (
        st.one_of(
            st.sampled_from(["[]", '"x"', "1.5", "true", "[5, 6, 7]"]),  # not an object
            _as_json(st.dictionaries(st.sampled_from(["gamma", "cutoff", "species", "x"]),
                                     st.just(1.0)).filter(lambda d: not set(RASTER) <= set(d))),
            _as_json(st.floats(-1, 0).map(lambda g: {**RASTER, "gamma": g})),
            _as_json(st.floats(-5, -0.01).map(lambda c: {**RASTER, "cutoff": c})),
            _as_json(st.lists(st.integers(1, 118), max_size=5).filter(lambda v: len(v) != 3)
                     .map(lambda z: {**RASTER, "species": z})),
            st.sampled_from([{**RASTER, "species": None}, {**RASTER, "species": ["C", 6, 7]},
                             {**RASTER, "species": [5.5, 6, 7]}]).map(json.dumps),
        ),
        r"ednn\.raster( must be an object| must have exactly the keys| needs gamma > 0"
        r"|\.species )|expected an int",
    ),
    "reference_energies": (
        st.one_of(
            st.sampled_from(["[]", '"x"', "1.5", "true", "[-57.5]"]),  # not an object
            _as_json(st.dictionaries(st.sampled_from(["B", "C", "N"]),
                                     st.sampled_from([None, "x", [1.0], {}]), min_size=1)),
            st.sampled_from(['{"C": NaN}', '{"C": Infinity}', '{"B": -40.0, "C": -Infinity}']),
        ),
        r"ednn\.reference_energies (must be an object|must map element symbols to finite eV)"
        r"|malformed ednn metadata",
    ),
}


def _junk(table):
    """(key, JSON text, match): a value the format forbids, or text that is not JSON."""
    def for_key(key):
        bad, match = table[key]
        return st.one_of(st.tuples(st.just(key), bad, st.just(match)),
                         st.tuples(st.just(key), NOT_JSON, st.just(rf"ednn\.{key} is not JSON")))

    return st.sampled_from(sorted(table)).flatmap(for_key)


@settings(max_examples=200, deadline=None)
@given(case=_junk(BAD_VALUES))
def test_malformed_metadata_raises_model_format_error(case):
    key, junk, match = case
    with pytest.raises(ModelFormatError, match=match):
        ModelSpec.from_metadata({**SPEC.to_metadata(), f"ednn.{key}": junk})


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


@settings(max_examples=120, deadline=None)
@given(case=_junk(BAD_ATOMISTIC_VALUES))
def test_malformed_atomistic_metadata_raises_model_format_error(case):
    key, junk, match = case
    with pytest.raises(ModelFormatError, match=match):
        ModelSpec.from_metadata({**ATOMISTIC.to_metadata(), f"ednn.{key}": junk})


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


def test_trunk_stride_is_the_product_of_the_trunk_strides(cnn2d, cnn2d_aa, cnn2d_pf, mlp2d,
                                                           multiscale2d):
    """Strided, anti-aliased (the blur carries the stride) and prefiltered (the blur does
    not) trunks alike; nets without a trunk, and multi-scale models, have none."""
    assert cnn2d[1].trunk_stride == (1, 1)
    assert cnn2d_aa[1].trunk_stride == (4, 4)
    assert cnn2d_pf[1].trunk_stride == (4, 4)
    assert mlp2d[1].trunk_stride is None
    assert multiscale2d[1].trunk_stride is None
