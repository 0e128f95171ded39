"""Every framework difference this suite handles, once: the registry the report, the pitfall records and the tests share.

One Difference per entry: its title, why it changes numbers, where each framework handles it
(pointers "path::name" into the source, resolved with `ast` when the report is written, so the
code shown is never stale), the mistake as a one-line diff, and the test guarding each handling.
tests/test_differences.py checks that every pointer resolves and every named test exists.

A pointer's name is one of:
  - a function or class, or a method as Class.method;
  - a module-level assignment (PIXEL_VALUES), or one entry of a module-level dict (_LAYERS["conv"]);
  - a module-level statement, by its target or called function (torch.backends.cudnn.conv.fp32_precision).
The comment lines directly above a definition belong to it: they say why.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("pytorch", "tensorflow", "jax", "mxnet")


@dataclass(frozen=True)
class Handling:
    """Where one framework handles a difference, and the tests that fail when that handling changes."""

    code: tuple[str, ...]  # pointers "path::name", read in this order
    tests: tuple[str, ...]  # pytest node ids "tests/test_x.py::test_name"


@dataclass(frozen=True)
class Difference:
    key: str  # a Python name: frameworks/<name>/pitfalls.py measures this difference in measure_<key>
    title: str  # short: it is a heading, and the key pitfall records carry
    why: str  # why it changes numbers, in a sentence or two
    handled: dict[str, Handling]  # framework -> its handling (a framework absent here has nothing to handle)
    correct: str  # the handling, as one line of code
    mistake: str  # the mistake a user makes instead, as one line of code
    measured_by: str = "python compare.py --pitfalls"  # the command that measures what the mistake costs

    def __hash__(self) -> int:  # frozen with a dict field: hash by the title, which is unique
        return hash(self.title)

    @property
    def tests(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(test for handling in self.handled.values() for test in handling.tests))


def _in(framework: str, file: str, *names: str) -> tuple[str, ...]:
    return tuple(f"frameworks/{framework}/{file}::{name}" for name in names)


def _tests(file: str, *names: str) -> tuple[str, ...]:
    return tuple(f"tests/{file}::{name}" for name in names)


def _own_tests(framework: str, *names: str) -> tuple[str, ...]:
    return _tests(f"test_pitfalls_{framework}.py", *names)


FORWARD_TEST = _tests("test_backends.py", "test_forward_matches_reference")
REDUCTION_TEST = "tests/test_data_parallel.py::test_data_parallel_takes_the_global_mean_not_the_mean_of_shard_means"

DIFFERENCES: tuple[Difference, ...] = (
    Difference(
        "data_layout",
        "Data layout",
        "Keras and Flax convolve N,H,W,C; the interface is canonical N,C,H,W, so they transpose at the boundary.",
        {
            "pytorch": Handling(_in("pytorch", "model.py", "data_format"), FORWARD_TEST),
            "tensorflow": Handling(_in("tensorflow", "model.py", "to_nhwc"), FORWARD_TEST),
            "jax": Handling(_in("jax", "model.py", "to_nhwc"), FORWARD_TEST),
            "mxnet": Handling(_in("mxnet", "model.py", "data_format"), FORWARD_TEST),
        },
        "logits = model(to_nhwc(x))", "logits = model(x)  # N,C,H,W into a channels-last conv",
    ),
    Difference(
        "kernel_layout",
        "Kernel layout",
        "Canonical O,I,H,W conv kernels and (out, in) matrices become H,W,I,O and (in, out) in Keras and Flax: "
        "a transpose, not a reshape.",
        {
            "pytorch": Handling(_in("pytorch", "convert.py", "set_weights"), _tests("test_backends.py", "test_weights_round_trip_bit_exact")),
            "tensorflow": Handling(("common/weights.py::oihw_to_hwio",), _own_tests("tensorflow", "test_conv_kernels_need_transpose_not_reshape")),
            "jax": Handling(("common/weights.py::oihw_to_hwio",), _own_tests("jax", "test_kernel_layout_needs_a_transpose")),
            "mxnet": Handling(_in("mxnet", "convert.py", "set_weights"), _tests("test_backends.py", "test_weights_round_trip_bit_exact")),
        },
        "kernel.transpose(2, 3, 1, 0)", "kernel.reshape(5, 5, 1, 6)",
    ),
    Difference(
        "flatten_order",
        "Flatten order",
        "Channels-last frameworks flatten H,W,C; fc1's canonical columns are C,H,W, so they are permuted. "
        "Every shape still fits if they are not.",
        {
            "pytorch": Handling(_in("pytorch", "model.py", '_LAYERS["flatten"]'), _tests("test_backends.py", "test_forward_depends_on_flatten_order")),
            "tensorflow": Handling(("common/weights.py::hwc_columns",), _own_tests("tensorflow", "test_flatten_order_needs_hwc_columns")),
            "jax": Handling(("common/weights.py::hwc_columns",), _own_tests("jax", "test_flatten_order_needs_hwc_columns")),
            "mxnet": Handling(_in("mxnet", "model.py", '_LAYERS["dense"]'), _tests("test_backends.py", "test_forward_depends_on_flatten_order")),
        },
        'fc1.kernel = hwc_columns(w["fc1.weight"], (16, 5, 5)).T', 'fc1.kernel = w["fc1.weight"].T  # columns still C,H,W',
    ),
    Difference(
        "padding",
        "Padding",
        "PyTorch and Gluon count padding in pixels; Keras and Flax name it 'same' or 'valid', and 'same' is "
        "padding 2 only for a 5x5 kernel at stride 1.",
        {
            "pytorch": Handling(_in("pytorch", "model.py", '_LAYERS["conv"]'), _own_tests("pytorch", "test_conv1_is_padded_by_2")),
            "tensorflow": Handling(
                (*_in("tensorflow", "model.py", '_LAYERS["conv"]'), "common/spec.py::padding_name"),
                _own_tests("tensorflow", "test_same_padding_on_conv2_changes_shapes_and_parameters"),
            ),
            "jax": Handling(
                (*_in("jax", "model.py", '_LAYERS["conv"]'), "common/spec.py::padding_name"), _own_tests("jax", "test_padding_same_on_conv2_breaks_fc1"),
            ),
            "mxnet": Handling(_in("mxnet", "model.py", '_LAYERS["conv"]'), _own_tests("mxnet", "test_conv1_padding_keeps_400_features_for_fc1")),
        },
        "nn.Conv2d(1, 6, 5, padding=2)", "nn.Conv2d(1, 6, 5)",
    ),
    Difference(
        "initializer",
        "Initializer",
        "Default inits differ (PyTorch Kaiming-uniform, Keras Glorot-uniform, Flax LeCun-normal, Gluon Uniform(0.07)). "
        "Every framework builds with Xavier-uniform and zero biases; parity runs start from the same canonical weights.",
        {
            "pytorch": Handling(_in("pytorch", "model.py", "build"), _own_tests("pytorch", "test_initializer_is_xavier_not_pytorch_default")),
            "tensorflow": Handling(
                _in("tensorflow", "model.py", "_INIT"), _own_tests("tensorflow", "test_keras_default_init_is_glorot_but_not_the_canonical_start"),
            ),
            "jax": Handling(_in("jax", "model.py", "XAVIER"), _own_tests("jax", "test_initializer_is_the_canonical_start")),
            "mxnet": Handling(_in("mxnet", "model.py", "GLOROT_UNIFORM"), _own_tests("mxnet", "test_initializer_is_glorot_uniform_not_gluons_default")),
        },
        "nn.init.xavier_uniform_(module.weight); nn.init.zeros_(module.bias)", "model = LeNet()  # the framework's own default init",
    ),
    Difference(
        "loss",
        "Loss",
        "Mean softmax cross-entropy on logits, spelled differently in each framework: Keras and Gluon must be told "
        "they get logits, optax and Gluon return one loss per example.",
        {
            "pytorch": Handling(
                _in("pytorch", "train.py", "cross_entropy"),
                _own_tests("pytorch", "test_loss_takes_logits_not_probabilities", "test_loss_is_the_batch_mean_not_the_sum"),
            ),
            "tensorflow": Handling(
                _in("tensorflow", "train.py", "_SUMMED_SPARSE_CROSS_ENTROPY", "cross_entropy"), _own_tests("tensorflow", "test_loss_needs_from_logits"),
            ),
            "jax": Handling(_in("jax", "train.py", "cross_entropy"), _own_tests("jax", "test_loss_is_the_batch_mean")),
            "mxnet": Handling(
                _in("mxnet", "train.py", "per_example_cross_entropy", "cross_entropy"), _tests("test_backends.py", "test_loss_and_grads_match_reference"),
            ),
        },
        "loss = F.cross_entropy(logits, y)", 'loss = F.cross_entropy(logits, y, reduction="sum")',
    ),
    Difference(
        "optimizer_defaults",
        "Optimizer defaults",
        "Keras Adam's eps is 1e-7, the others' 1e-8, so every hyperparameter comes from the config. Keras and MXNet add eps "
        "before Adam's bias correction, PyTorch and optax after: Adam runs agree closely, not exactly.",
        {
            "pytorch": Handling(_in("pytorch", "train.py", "make_optimizer"), _own_tests("pytorch", "test_adam_eps_is_added_after_the_bias_correction")),
            "tensorflow": Handling(_in("tensorflow", "train.py", "make_optimizer"), _own_tests("tensorflow", "test_adam_needs_explicit_epsilon")),
            "jax": Handling(_in("jax", "train.py", "make_optimizer", "_optimizer"), _own_tests("jax", "test_adam_eps_is_added_after_the_bias_correction")),
            "mxnet": Handling(_in("mxnet", "train.py", "_optimizer"), _own_tests("mxnet", "test_adam_adds_eps_before_the_bias_correction")),
        },
        "keras.optimizers.Adam(learning_rate=0.001, epsilon=1e-8)", "keras.optimizers.Adam(learning_rate=0.001)  # epsilon 1e-7",
    ),
    Difference(
        "gluon_step",
        "Gluon step(batch_size)",
        "gluon.Trainer.step(n) divides the gradient by n; with per-example losses and n = the batch's length each update "
        "is SGD on the mean loss, the last, partial batch included.",
        {"mxnet": Handling(_in("mxnet", "train.py", "Trainer.reduce"), _own_tests("mxnet", "test_step_divides_the_gradient_by_the_batch_length"))},
        "trainer.step(len(batch_indices))", "trainer.step(1)",
    ),
    Difference(
        "batch_order",
        "Batch order",
        "Each framework shuffles with its own generator: the same seed gives other batches, and curves differ as much as "
        "two seeds' do. All frameworks follow one common order instead.",
        {
            "pytorch": Handling(("common/data.py::batch_order",), _own_tests("pytorch", "test_batches_follow_the_common_order")),
            "tensorflow": Handling(("common/data.py::batch_order",), _own_tests("tensorflow", "test_batch_order_is_the_common_one")),
            "jax": Handling(("common/data.py::batch_order",), _own_tests("jax", "test_batch_order_is_the_common_one")),
            "mxnet": Handling(("common/data.py::batch_order",), _own_tests("mxnet", "test_common_batch_order_matches_the_oracle_own_shuffle_does_not")),
        },
        "for indices in batch_order(n, 128, seed, epoch):", "DataLoader(train_set, batch_size=128, shuffle=True)",
    ),
    Difference(
        "dropout_at_evaluation",
        "Dropout at evaluation",
        "Dropout must be off when evaluating, and each framework switches it its own way: model.eval(), training=False, "
        "deterministic=True, or Gluon's predict mode outside autograd.record().",
        {
            "pytorch": Handling(_in("pytorch", "train.py", "_logits"), _own_tests("pytorch", "test_evaluation_turns_dropout_off")),
            "tensorflow": Handling(_in("tensorflow", "train.py", "_logits"), _own_tests("tensorflow", "test_dropout_is_off_at_evaluation")),
            "jax": Handling(_in("jax", "model.py", '_LAYERS["dropout"]'), _own_tests("jax", "test_dropout_is_off_at_evaluation")),
            "mxnet": Handling(_in("mxnet", "train.py", "forward"), _own_tests("mxnet", "test_forward_runs_dropout_in_predict_mode")),
        },
        "model.eval(); logits = model(x)", "logits = model(x)  # still in train mode",
    ),
    Difference(
        "tf32",
        "Float32 on GPUs (TF32)",
        "Ampere and newer GPUs run float32 convolutions and matmuls in TF32 (10 mantissa bits, about 1e-3 relative error) "
        "unless told not to; each framework is set to true float32, or parity at 1e-5 fails there.",
        {
            "pytorch": Handling(
                _in("pytorch", "model.py", "torch.backends.cudnn.conv.fp32_precision", "torch.backends.cuda.matmul.fp32_precision"),
                _own_tests("pytorch", "test_float32_means_ieee_not_tf32"),
            ),
            "tensorflow": Handling(
                _in("tensorflow", "model.py", "tf.config.experimental.enable_tensor_float_32_execution"),
                _tests("test_backends.py", "test_float32_means_float32_on_gpus"),
            ),
            "jax": Handling(_in("jax", "model.py", "PRECISION"), _tests("test_backends.py", "test_float32_means_float32_on_gpus")),
            "mxnet": Handling(_in("mxnet", "__init__.py", "os.environ.setdefault"), _tests("test_backends.py", "test_float32_means_float32_on_gpus")),
        },
        'torch.backends.cudnn.conv.fp32_precision = "ieee"', "# nothing: the GPU's TF32 default",
    ),
    Difference(
        "data_parallel_reduction",
        "Data-parallel reduction",
        "A global batch split unevenly over N replicas (128 over 3: 43, 43, 42) needs each replica's loss SUM over the "
        "global batch size: the mean of the shards' means weighs a small shard's examples more.",
        {
            "pytorch": Handling(_in("pytorch", "distributed.py", "DataParallelTrainer.reduce"), (REDUCTION_TEST,)),
            "tensorflow": Handling(_in("tensorflow", "train.py", "Trainer.reduce"), (REDUCTION_TEST,)),
            "jax": Handling(_in("jax", "train.py", "mean_over_real_examples"), (REDUCTION_TEST,)),
            "mxnet": Handling(_in("mxnet", "train.py", "Trainer.reduce"), (REDUCTION_TEST,)),
        },
        "loss = per_example_loss.sum() / global_batch_size", "loss = per_example_loss.mean()  # this shard's mean",
    ),
    Difference(
        "scaling_by_255",
        "Scaling by 255",
        "TensorFlow's graph optimizer turns x / 255 into x * (1/255), one ulp off for about half the pixel values; a lookup "
        "table keeps the inputs bit-identical to the other frameworks'.",
        {
            "tensorflow": Handling(
                _in("tensorflow", "train.py", "PIXEL_VALUES", "Trainer.gather_batch"),
                _own_tests("tensorflow", "test_pixels_are_scaled_bit_identically_to_numpy"),
            ),
        },
        "x = tf.gather(PIXEL_VALUES, pixels)", "x = tf.cast(pixels, tf.float32) / 255",
    ),
    Difference(
        "cpu_defaults",
        "CPU defaults",
        "Frameworks choose kernels and thread pools from the CPU: TensorFlow turns its oneDNN kernels on by default only on "
        "CPUs with VNNI, BF16 or AMX instructions (not on an AVX2 CPU), and thread pools left alone can share a core. "
        "The numbers stay the same; the speed does not.",
        {
            name: Handling(
                ("common/runtime.py::settings",),
                _tests("test_cpu.py", "test_tensorflow_gets_onednn_where_its_kernels_fit_the_cpu",
                       "test_the_onednn_setting_says_whether_tensorflow_would_have_chosen_it")
                + _tests("test_runtime.py", "test_a_loaded_backend_runs_with_its_settings"),
            )
            for name in FRAMEWORKS
        },
        'tune_process("tensorflow")  # TF_ENABLE_ONEDNN_OPTS=1 on every AVX2 CPU', "import tensorflow  # oneDNN off on an AVX2 CPU",
        measured_by="tox -e bench",  # benchmarks/train_speed.py; a later comparison on the same CPU shows its figures
    ),
)

BY_TITLE = {difference.title: difference for difference in DIFFERENCES}
BY_KEY = {difference.key: difference for difference in DIFFERENCES}
# The entries by name, for the code that records a measurement under one (common/pitfalls.py::record).
DATA_LAYOUT, KERNEL_LAYOUT, FLATTEN_ORDER = BY_KEY["data_layout"], BY_KEY["kernel_layout"], BY_KEY["flatten_order"]
PADDING, INITIALIZER, LOSS = BY_KEY["padding"], BY_KEY["initializer"], BY_KEY["loss"]
OPTIMIZER_DEFAULTS, GLUON_STEP, BATCH_ORDER = BY_KEY["optimizer_defaults"], BY_KEY["gluon_step"], BY_KEY["batch_order"]
DROPOUT_AT_EVALUATION, TF32 = BY_KEY["dropout_at_evaluation"], BY_KEY["tf32"]
DATA_PARALLEL_REDUCTION, SCALING_BY_255, CPU_DEFAULTS = BY_KEY["data_parallel_reduction"], BY_KEY["scaling_by_255"], BY_KEY["cpu_defaults"]


def entry(difference: Difference | str) -> Difference:
    """The registry entry for a Difference or its title; an unknown title is an error, never a new row."""
    if isinstance(difference, Difference):
        return difference
    try:
        return BY_TITLE[difference]
    except KeyError:
        raise KeyError(f"{difference!r} is not a difference in common/differences.py; known: {', '.join(BY_TITLE)}") from None


# ---------------------------------------------------------------------------------------------
# Reading the code a pointer names
# ---------------------------------------------------------------------------------------------


class PointerError(LookupError):
    """A pointer whose file or name is not in the source."""


@cache
def _parsed(path: str) -> tuple[list[str], ast.Module]:
    file = REPO / path
    if not file.is_file():
        raise PointerError(f"{path}: no such file")
    text = file.read_text()
    return text.splitlines(), ast.parse(text)


def _statement_names(node: ast.stmt) -> set[str]:
    """What a module-level statement can be found by: its assignment targets, or the function it calls."""
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {ast.unparse(target) for target in targets}
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        return {ast.unparse(node.value.func)}
    return set()


def _find(body: list[ast.stmt], name: str) -> ast.AST | None:
    """The node `name` names in a body of statements: a def, a class, a statement, Class.method, or dict["key"]."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return node
        if name in _statement_names(node):
            return node
    head, dot, rest = name.partition(".")
    if dot:
        owner = next((n for n in body if isinstance(n, ast.ClassDef) and n.name == head), None)
        if owner is not None:
            return _find(owner.body, rest)
    if name.endswith("]") and "[" in name:
        table, _, key = name[:-1].partition("[")
        node = _find(body, table)
        value = getattr(node, "value", None)
        if isinstance(value, ast.Dict):
            wanted = ast.literal_eval(key)
            for key_node, value_node in zip(value.keys, value.values):
                if isinstance(key_node, ast.Constant) and key_node.value == wanted:
                    return _Span(key_node.lineno, value_node.end_lineno)
    return None


@dataclass(frozen=True)
class _Span:
    lineno: int
    end_lineno: int


def _first_line(node, lines: list[str]) -> int:
    """The node's first line, 1-based, counting its decorators and the comment lines right above them."""
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    while first > 1 and lines[first - 2].strip().startswith("#"):
        first -= 1
    return first


def code(pointer: str) -> str:
    """The source a pointer "path::name" names, with the comments above it, dedented; PointerError if it is not there."""
    path, sep, name = pointer.partition("::")
    if not sep or not name:
        raise PointerError(f"{pointer!r}: expected path::name")
    lines, module = _parsed(path)
    node = _find(module.body, name)
    if node is None:
        raise PointerError(f"{pointer}: {name} is not defined in {path}")
    chosen = lines[_first_line(node, lines) - 1 : node.end_lineno]
    indent = min(len(line) - len(line.lstrip()) for line in chosen if line.strip())
    return "\n".join(line[indent:] for line in chosen)


def names_a_test(node_id: str) -> bool:
    """Whether a pytest node id "tests/test_x.py::test_name" names a test function defined in that file."""
    path, sep, name = node_id.partition("::")
    if not sep or not path.startswith("tests/"):
        return False
    try:
        _, module = _parsed(path)
    except PointerError:
        return False
    return any(isinstance(node, ast.FunctionDef) and node.name == name and name.startswith("test_") for node in module.body)


# Where each framework defines the network: its layer table (spec kind -> layer) and the build that reads the spec.
NETWORK: dict[str, tuple[str, ...]] = {
    "pytorch": _in("pytorch", "model.py", "_LAYERS", "build"),
    "tensorflow": _in("tensorflow", "model.py", "_LAYERS", "build"),
    "jax": _in("jax", "model.py", "_LAYERS", "LeNet", "build"),
    "mxnet": _in("mxnet", "model.py", "_LAYERS", "build"),
}
