"""The differences registry: every pointer resolves to real source, every named test exists, and every
pitfall record of every backend lands under a registry entry."""

from __future__ import annotations

import ast
from dataclasses import replace

import pytest

from common import differences
from common.differences import BY_TITLE, DIFFERENCES, FRAMEWORKS, NETWORK, REPO, Difference, PointerError, code, entry, names_a_test
from common.interface import TrainConfig
from common.pitfalls import final_accuracy_and_curve, record
from common.weights import init_weights
from frameworks import get_backend


def test_every_pointer_resolves_to_real_source():
    pointers = [p for d in DIFFERENCES for h in d.handled.values() for p in h.code] + [p for ps in NETWORK.values() for p in ps]
    for pointer in pointers:
        source = code(pointer)
        assert source.strip(), pointer
        name = pointer.partition("::")[2]
        shown = name[name.index("[") + 1 : -1] if name.endswith("]") else name.rpartition(".")[2]  # a dict entry shows its key
        assert shown in source, f"{pointer}: the code shown does not contain {shown}"


def test_every_named_test_exists():
    for difference in DIFFERENCES:
        assert difference.tests, f"{difference.title}: no test guards it"
        for test in difference.tests:
            assert names_a_test(test), f"{difference.title}: {test} is not a test function in that file"


def test_every_entry_is_complete_and_one_line():
    assert len(BY_TITLE) == len(DIFFERENCES)  # titles are unique
    for difference in DIFFERENCES:
        assert set(difference.handled) <= set(FRAMEWORKS), difference.title
        assert len(difference.title) <= 40, "a title is a heading: keep it short"
        for line in (difference.correct, difference.mistake):
            assert line and "\n" not in line, difference.title
        assert all(handling.code and handling.tests for handling in difference.handled.values()), difference.title


def test_code_reads_definitions_with_their_comments_and_dict_entries():
    pixel_table = code("frameworks/tensorflow/train.py::PIXEL_VALUES")
    assert pixel_table.startswith("# Pixel value") and pixel_table.rstrip().endswith("np.float32(255)")
    dropout = code('frameworks/jax/model.py::_LAYERS["dropout"]')
    assert dropout.splitlines()[-1].startswith('"dropout": lambda') and "deterministic=True" in dropout
    reduce = code("frameworks/mxnet/train.py::Trainer.reduce")
    assert reduce.startswith("def reduce(") and "global_batch_size" in reduce  # dedented method
    assert code("frameworks/tensorflow/model.py::tf.config.experimental.enable_tensor_float_32_execution").endswith("(False)")


@pytest.mark.parametrize("pointer", [
    "frameworks/pytorch/train.py::no_such_function", "frameworks/pytorch/nowhere.py::build", 'frameworks/pytorch/model.py::_LAYERS["nothing"]',
    "frameworks/pytorch/model.py", "frameworks/pytorch/train.py::Trainer.no_method",
])
def test_a_pointer_that_does_not_resolve_is_an_error(pointer):
    with pytest.raises(PointerError):
        code(pointer)


def test_names_a_test_refuses_what_is_not_a_test():
    assert names_a_test("tests/test_differences.py::test_every_named_test_exists")
    assert not names_a_test("tests/test_differences.py::no_such_test")
    assert not names_a_test("tests/no_such_file.py::test_x")
    assert not names_a_test("common/differences.py::code")


def test_records_take_a_registry_entry_or_its_title_and_refuse_others():
    loss = entry("Loss")
    assert isinstance(loss, Difference) and entry(loss) is loss
    by_entry = record(loss, "F.cross_entropy(logits, y, reduction='sum')", "pytorch", "final test accuracy", 0.8, 0.1, loss.tests[0])
    by_title = record("Loss", "F.cross_entropy(logits, y, reduction='sum')", "pytorch", "final test accuracy", 0.8, 0.1, loss.tests[0])
    assert by_entry == by_title and by_entry["difference"] == "Loss" and "curves" not in by_entry
    with pytest.raises(KeyError, match="not a difference in common/differences.py"):
        record("Loss function", "x", "pytorch", "m", 0, 1, "t")
    curved = record(loss, "x", "pytorch", "final test accuracy", 0.8, 0.1, "t", curves={"correct": [0.5, 0.8]}, curve_label="test accuracy")
    assert curved["curves"] == {"correct": [0.5, 0.8]} and curved["curve_label"] == "test accuracy"


def _record_differences(path) -> list[tuple[int, ast.expr]]:
    """What a backend's pitfalls.py passes to record() as the difference: its first argument."""
    return [
        (node.lineno, node.args[0])
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "record" and node.args
    ]


def test_every_backends_pitfall_records_name_a_registry_entry_not_a_title_string():
    files = sorted((REPO / "frameworks").glob("*/pitfalls.py"))
    assert files
    found = []
    for path in files:
        for line, first in _record_differences(path):
            where = f"{path.relative_to(REPO)}:{line}"
            assert not isinstance(first, ast.Constant), f"{where}: pass the registry entry (differences.NAME), not {first.value!r}"
            if isinstance(first, ast.Attribute) and getattr(first.value, "id", None) == "differences":
                assert isinstance(getattr(differences, first.attr, None), Difference), f"{where}: differences.{first.attr} is no entry"
                found.append(first.attr)
    assert "INITIALIZER" in found  # the scan sees the records


def test_a_measurement_can_keep_its_accuracy_curve(fashion_mnist):
    oracle = get_backend("numpy")  # the float64 NumPy backend: no framework needed
    data = replace(fashion_mnist, train_images=fashion_mnist.train_images[:128], train_labels=fashion_mnist.train_labels[:128],
                   test_images=fashion_mnist.test_images[:32], test_labels=fashion_mnist.test_labels[:32])
    config = TrainConfig(epochs=2, variant="modern")

    def run(function, lr: float):
        model, recipe = oracle.build(config.variant), replace(config, lr=lr)
        oracle.set_weights(model, init_weights(0))
        return function(oracle.make_trainer(model, data, recipe), lambda x, y: oracle.evaluate(model, x, y), data, recipe)

    final, curve = run(final_accuracy_and_curve, 0.1)
    assert len(curve) == 2 and curve[-1] == final
    # One batch per epoch: epoch 1's loss is the start's, the first update leaves the rails by epoch 2.
    diverged, partial = run(final_accuracy_and_curve, 1e4)
    assert diverged.startswith("diverged: epoch 2") and len(partial) == 1
