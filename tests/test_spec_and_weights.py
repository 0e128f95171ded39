"""The network as data and the canonical weight file."""

from __future__ import annotations

import numpy as np
import pytest

from common import spec
from common.weights import WeightsError, check_weights, chw_columns, hwc_columns, init_weights, load_weights, save_weights

SHAPES = [(6, 28, 28), (6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 10, 10), (16, 5, 5), (400,), (120,), (120,), (84,), (84,), (10,)]


def test_classic_layers():
    layers = spec.layers("classic")
    assert [layer.output_shape for layer in layers] == SHAPES
    assert [layer.kind for layer in layers] == [
        "conv", "sigmoid", "avg_pool", "conv", "sigmoid", "avg_pool", "flatten", "dense", "sigmoid", "dense", "sigmoid", "dense",
    ]
    assert layers[0].hyper["padding"] == 2 and layers[3].hyper["padding"] == 0


def test_modern_layers():
    layers = spec.layers("modern")
    kinds = [layer.kind for layer in layers]
    assert "sigmoid" not in kinds and "avg_pool" not in kinds
    assert kinds.index("dropout") == kinds.index("dense") + 2  # right after fc1's activation
    assert layers[kinds.index("dropout")].hyper["rate"] == 0.5


@pytest.mark.parametrize("variant", spec.VARIANTS)
def test_parameter_counts(variant):
    counts = {layer.name: layer.param_count for layer in spec.layers(variant) if layer.param_count}
    assert counts == {"conv1": 156, "conv2": 2416, "fc1": 48120, "fc2": 10164, "fc3": 850}
    assert spec.param_count(variant) == 61706
    assert sum(np.prod(shape) for shape in spec.param_shapes(variant).values()) == 61706


def test_unknown_variant():
    with pytest.raises(ValueError, match="classic, modern"):
        spec.layers("vintage")


def test_canonical_names_and_shapes():
    assert spec.param_shapes() == {
        "conv1.weight": (6, 1, 5, 5), "conv1.bias": (6,),
        "conv2.weight": (16, 6, 5, 5), "conv2.bias": (16,),
        "fc1.weight": (120, 400), "fc1.bias": (120,),
        "fc2.weight": (84, 120), "fc2.bias": (84,),
        "fc3.weight": (10, 84), "fc3.bias": (10,),
    }


@pytest.mark.parametrize("variant", spec.VARIANTS)
def test_fc1_reads_the_flattened_16x5x5_map(variant):
    assert spec.flattened_inputs(variant) == {"fc1": (16, 5, 5)}


def test_hwc_columns_follow_a_channels_last_flatten():
    """Column c*25 + h*5 + w (C,H,W order) moves to h*80 + w*16 + c (H,W,C order), and back."""
    matrix = np.arange(2 * 400, dtype=np.float32).reshape(2, 400)
    hwc = hwc_columns(matrix, (16, 5, 5))
    c, h, w = 7, 3, 1
    np.testing.assert_array_equal(hwc[:, h * 80 + w * 16 + c], matrix[:, c * 25 + h * 5 + w])
    np.testing.assert_array_equal(chw_columns(hwc, (16, 5, 5)), matrix)


def test_init_is_seeded_xavier_uniform():
    a, b, c = init_weights(0), init_weights(0), init_weights(1)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert a[name].dtype == np.float32
    assert not np.array_equal(a["fc1.weight"], c["fc1.weight"])
    assert not a["conv1.bias"].any()
    bound = np.sqrt(6 / (400 + 120))
    assert 0.99 * bound < np.abs(a["fc1.weight"]).max() <= bound
    assert abs(a["fc1.weight"].std() - bound / np.sqrt(3)) < 0.01 * bound


def test_round_trip_is_bit_exact(tmp_path):
    weights = init_weights(3)
    path = save_weights(weights, tmp_path / "w.npz")
    loaded = load_weights(path)
    assert list(loaded) == list(weights)
    for name in weights:
        np.testing.assert_array_equal(loaded[name], weights[name])
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]  # no temp file left behind


def test_damaged_file(tmp_path):
    path = save_weights(init_weights(0), tmp_path / "w.npz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="w.npz: not a readable .npz"):
        load_weights(path)


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="no such weights file"):
        load_weights(tmp_path / "absent.npz")


def test_wrong_name_shape_and_dtype():
    weights = init_weights(0)
    with pytest.raises(WeightsError, match=r"missing \['fc3.bias'\]"):
        check_weights({k: v for k, v in weights.items() if k != "fc3.bias"})
    with pytest.raises(WeightsError, match=r"unexpected \['fc4.weight'\]"):
        check_weights({**weights, "fc4.weight": weights["fc3.weight"]})
    with pytest.raises(WeightsError, match=r"fc1.weight has shape \(400, 120\), expected \(120, 400\)"):
        check_weights({**weights, "fc1.weight": weights["fc1.weight"].T})
    with pytest.raises(WeightsError, match="conv1.weight has dtype float64, expected float32"):
        check_weights({**weights, "conv1.weight": weights["conv1.weight"].astype(np.float64)})


def test_failed_write_keeps_the_old_file(tmp_path):
    path = save_weights(init_weights(0), tmp_path / "w.npz")
    before = path.read_bytes()
    with pytest.raises(WeightsError):
        save_weights({"conv1.weight": np.zeros(3, np.float32)}, path)
    assert path.read_bytes() == before


def not_weights_files(tmp_path):
    """Files a user might pass as weights by mistake, and what the error must say about each."""
    npy = tmp_path / "array.npy"
    np.save(npy, init_weights(0)["fc1.weight"])
    text = tmp_path / "weights.txt"
    text.write_text("conv1.weight 0.1 0.2\n")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    objects = tmp_path / "objects.npz"
    np.savez(objects, **{"conv1.weight": np.array([{}], dtype=object)})
    return [
        (npy, "holds a single .npy array, not the .npz archive"),
        (text, "is not an .npz weights file"),
        (empty, "is empty"),
        (objects, "holds Python objects instead of numbers"),
        (tmp_path, "is a folder, not a weights file"),
    ]


def test_files_that_are_not_weights_get_one_clear_error(tmp_path):
    for path, problem in not_weights_files(tmp_path):
        with pytest.raises(WeightsError) as caught:
            load_weights(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and problem in message and "Fix: give a file written by --save-weights" in message
        assert "allow_pickle" not in message  # NumPy's advice; it would let a file run code


def test_non_finite_weights_are_named():
    weights = init_weights(0)
    weights["fc1.weight"][0, :3] = np.nan
    weights["fc1.weight"][1, 0] = np.inf
    weights["fc3.bias"][2] = -np.inf
    with pytest.raises(WeightsError, match="fc1.weight holds 3 NaN and 1 inf values; fc3.bias holds 1 inf value. Weights must be finite"):
        check_weights(weights)


def test_non_finite_weights_file_is_refused(tmp_path):
    weights = init_weights(0)
    weights["conv2.bias"][0] = np.nan
    np.savez(tmp_path / "diverged.npz", **weights)
    with pytest.raises(WeightsError, match="diverged.npz: conv2.bias holds 1 NaN value"):
        load_weights(tmp_path / "diverged.npz")
