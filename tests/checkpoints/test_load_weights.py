"""Weight tables: exact loading, refusal before any assignment, and export as the inverse."""

import logging

import keras
import numpy as np
import pytest

from tfllm.checkpoints import (
    IDENTITY,
    TRANSPOSE,
    CheckpointError,
    WeightEntry,
    compose,
    concat,
    export_weights,
    load_weights,
    reshape,
)


def _variable(shape, fill=0.0, dtype="float32"):
    return keras.Variable(np.full(shape, fill), dtype=dtype)


def _random(*shape, seed=0):
    return np.random.default_rng(seed + len(shape)).standard_normal(shape).astype(np.float32)


@pytest.fixture()
def table():
    """A table using every transform, and a state dict that fits it."""
    state_dict = {
        "embed.weight": _random(10, 4),
        "linear.weight": _random(6, 4, seed=1),  # PyTorch Linear (out, in)
        "q.weight": _random(4, 4, seed=2),
        "k.weight": _random(2, 4, seed=3),
        "v.weight": _random(2, 4, seed=4),
        "q.bias": _random(4, seed=5),
        "k.bias": _random(2, seed=6),
        "v.bias": _random(2, seed=7),
        "proj.weight": _random(4, 4, seed=8),
        "step": np.array([7], dtype=np.int64),
    }
    entries = [
        WeightEntry(_variable((10, 4)), ("embed.weight",)),
        WeightEntry(_variable((4, 6)), ("linear.weight",), TRANSPOSE),
        WeightEntry(_variable((4, 8)), ("q.weight", "k.weight", "v.weight"), compose(concat(0, [4, 2, 2]), TRANSPOSE)),
        WeightEntry(_variable((8,)), ("q.bias", "k.bias", "v.bias"), concat(axis=0, sizes=[4, 2, 2])),
        WeightEntry(_variable((2, 2, 4)), ("proj.weight",), reshape((2, 2, 4), (4, 4))),
        WeightEntry(_variable((1,), dtype="int32"), ("step",)),
    ]
    return entries, state_dict


def _values(entries):
    return [keras.ops.convert_to_numpy(e.variable.value).copy() for e in entries]


def test_load_then_export_round_trips(table, caplog):
    entries, state_dict = table
    with caplog.at_level(logging.INFO, logger="tfllm.checkpoints.weights"):
        load_weights(entries, state_dict, source="unit")
    assert "Loaded 10 tensors into 6 variables from unit" in caplog.text
    values = _values(entries)
    np.testing.assert_array_equal(values[1], state_dict["linear.weight"].T)
    np.testing.assert_array_equal(values[2][:, 4:6], state_dict["k.weight"].T)
    assert values[5].dtype == np.int32 and values[5][0] == 7
    exported = export_weights(entries)
    assert sorted(exported) == sorted(state_dict)
    for key, value in state_dict.items():
        np.testing.assert_array_equal(exported[key], value, err_msg=key)
        assert exported[key].flags.c_contiguous and exported[key].flags.owndata, key
    assert exported["q.weight"].dtype == np.float32 and exported["step"].dtype == np.int32


def test_missing_keys_are_all_listed_and_nothing_is_assigned(table):
    entries, state_dict = table
    before = _values(entries)
    del state_dict["v.bias"], state_dict["embed.weight"]
    with pytest.raises(CheckpointError, match=r"Keys missing from ckpt-folder: `embed\.weight`, `v\.bias`"):
        load_weights(entries, state_dict, source="ckpt-folder")
    for old, new in zip(before, _values(entries)):
        np.testing.assert_array_equal(old, new)


def test_shape_mismatch_names_key_and_shapes_and_nothing_is_assigned(table):
    entries, state_dict = table
    before = _values(entries)
    state_dict["linear.weight"] = _random(6, 5)
    with pytest.raises(CheckpointError) as info:
        load_weights(entries, state_dict, source="ckpt")
    message = str(info.value)
    assert "`linear.weight` (6, 5)" in message and "expected shape (4, 6)" in message and "received (5, 6)" in message
    for old, new in zip(before, _values(entries)):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize(
    "key, shape, match",
    [
        ("k.bias", (3,), r"`k\.bias` \(3,\).*concat\(axis=0, sizes=\[4, 2, 2\]\) failed"),
        ("proj.weight", (2, 8), r"`proj\.weight` \(2, 8\).*reshape.*failed"),
    ],
)
def test_transform_failures_name_the_keys(table, key, shape, match):
    entries, state_dict = table
    state_dict[key] = _random(*shape)
    with pytest.raises(CheckpointError, match=match):
        load_weights(entries, state_dict, source="ckpt")


def test_unused_keys_are_refused_unless_ignorable(table):
    entries, state_dict = table
    state_dict["lm_head.weight"] = _random(10, 4)
    state_dict["h.0.attn.bias"] = _random(1, 1, 4, 4)
    before = _values(entries)
    with pytest.raises(CheckpointError, match=r"`h\.0\.attn\.bias`, `lm_head\.weight`"):
        load_weights(entries, state_dict, source="ckpt")
    for old, new in zip(before, _values(entries)):
        np.testing.assert_array_equal(old, new)
    with pytest.raises(CheckpointError, match=r"`lm_head\.weight`"):
        load_weights(entries, state_dict, source="ckpt", ignorable=[r"h\.\d+\.attn\.bias", r"lm_head"])
    load_weights(entries, state_dict, source="ckpt", ignorable=[r"h\.\d+\.attn\.bias", r"lm_head\.weight"])
    np.testing.assert_array_equal(_values(entries)[0], state_dict["embed.weight"])


def test_invalid_ignorable():
    with pytest.raises(ValueError, match="Invalid value for argument `ignorable`"):
        load_weights([], {}, source="x", ignorable=["("])


def test_same_variable_twice_is_refused():
    variable = _variable((2,))
    entries = [WeightEntry(variable, ("a",)), WeightEntry(variable, ("b",))]
    with pytest.raises(ValueError, match="Invalid value for argument `entries`. Expected each variable at most once"):
        load_weights(entries, {"a": np.zeros(2), "b": np.zeros(2)}, source="x")


def test_tied_keys_export_once_and_must_agree():
    entries = [WeightEntry(_variable((2,), 1.0), ("w",)), WeightEntry(_variable((2,), 1.0), ("w",))]
    np.testing.assert_array_equal(export_weights(entries)["w"], [1.0, 1.0])
    entries[1].variable.assign(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="`w` gets two different values"):
        export_weights(entries)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: WeightEntry(_variable((2,)), ()), "argument `hf_keys`. Expected a non-empty tuple of strings"),
        (lambda: WeightEntry(_variable((2,)), ("a", "b")), r"argument `hf_keys`. Expected 1 key\(s\) for transform"),
        (lambda: WeightEntry(_variable((2,)), ("a",), "transpose"), "argument `transform`. Expected a Transform"),
        (lambda: concat(axis=0.5, sizes=[1]), "argument `axis`. Expected an integer. Received: axis=0.5"),
        (lambda: concat(axis=0, sizes=[]), "argument `sizes`. Expected a non-empty list"),
        (lambda: concat(axis=0, sizes=[1, -2]), "argument `sizes`. Expected a tuple of non-negative integers"),
        (lambda: reshape((2, 3), (4, 2)), r"argument `tfllm_shape`. Expected a shape with as many elements"),
        (lambda: reshape((2, 3), "6"), "argument `hf_shape`"),
        (lambda: compose(), "argument `transforms`. Expected one or more Transform"),
        (lambda: compose(TRANSPOSE, concat(0, [1, 1])), "transforms after the first to take a single array"),
        (lambda: TRANSPOSE.to_tfllm(np.zeros(2), np.zeros(2)), r"argument `hf_arrays`. Expected 1 array\(s\)"),
    ],
)
def test_argument_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_single_string_key_is_accepted():
    assert WeightEntry(_variable((2,)), "a").hf_keys == ("a",)


def test_transforms_invert():
    q, k = _random(3, 2), _random(1, 2, seed=1)
    fused = concat(axis=0, sizes=[3, 1])
    back = fused.to_hf(fused.to_tfllm(q, k))
    np.testing.assert_array_equal(back[0], q)
    np.testing.assert_array_equal(back[1], k)
    (same,) = IDENTITY.to_hf(IDENTITY.to_tfllm(q))
    np.testing.assert_array_equal(same, q)
    assert str(compose(concat(0, [3, 1]), TRANSPOSE)) == "compose(concat(axis=0, sizes=[3, 1]), transpose)"
