"""The oracle: LeNet's forward pass, loss and gradients in plain float64 NumPy.

Every backend is checked against this, never against another framework. It walks the same
layer list as the backends (common.spec) and writes each layer's forward and backward rule out
by hand, so it shares no code path with any framework. Dropout is the identity (eval mode)
unless a mask is given for it, as the numpy backend's training step does.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from common import spec
from common.weights import Weights


def _windows(x, k):
    """(N, C, H, W) -> (N, C, H-k+1, W-k+1, k, k) view of every k x k patch."""
    return sliding_window_view(x, (k, k), axis=(2, 3))


def _conv_forward(x, w, b, padding):
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    patches = _windows(xp, w.shape[-1])
    return np.einsum("nchwij,ocij->nohw", patches, w, optimize=True) + b[:, None, None], patches


def _conv_backward(dout, patches, w, padding, input_grad=True):
    # tensordot, not einsum: these contractions run as one matrix product each (BLAS), where
    # einsum's path over six-axis strided views loops in NumPy, seconds per call.
    k = w.shape[-1]
    dw = np.tensordot(dout, patches, axes=([0, 2, 3], [0, 2, 3]))  # (O, C, k, k)
    db = dout.sum(axis=(0, 2, 3))
    if not input_grad:  # the first layer's input is the image: nothing upstream needs its gradient
        return None, dw, db
    # The input gradient is a full convolution of dout with the kernel flipped in H and W.
    dout_padded = np.pad(dout, ((0, 0), (0, 0), (k - 1, k - 1), (k - 1, k - 1)))
    dxp = np.tensordot(_windows(dout_padded, k), w[:, :, ::-1, ::-1], axes=([1, 4, 5], [0, 2, 3])).transpose(0, 3, 1, 2)
    h, wd = dxp.shape[2] - 2 * padding, dxp.shape[3] - 2 * padding
    return dxp[:, :, padding : padding + h, padding : padding + wd], dw, db


def _pool_blocks(x, size):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // size, size, w // size, size)


def _forward(weights: Weights, x, variant, dropout_masks=None):
    """Run the network, keeping what each layer's backward rule needs and each layer's output."""
    a = np.asarray(x, np.float64)
    w = {name: np.asarray(t, np.float64) for name, t in weights.items()}
    tape, outputs = [], []
    for layer in spec.layers(variant):
        h = layer.hyper
        if layer.kind == "conv":
            out, patches = _conv_forward(a, w[f"{layer.name}.weight"], w[f"{layer.name}.bias"], h["padding"])
            tape.append((layer, patches))
        elif layer.kind == "dense":
            out = a @ w[f"{layer.name}.weight"].T + w[f"{layer.name}.bias"]
            tape.append((layer, a))
        elif layer.kind == "sigmoid":
            out = 1.0 / (1.0 + np.exp(-a))
            tape.append((layer, out))
        elif layer.kind == "relu":
            out = np.maximum(a, 0.0)
            tape.append((layer, a > 0))
        elif layer.kind == "avg_pool":
            out = _pool_blocks(a, h["size"]).mean(axis=(3, 5))
            tape.append((layer, None))
        elif layer.kind == "max_pool":
            blocks = _pool_blocks(a, h["size"]).transpose(0, 1, 2, 4, 3, 5)
            flat = blocks.reshape(*blocks.shape[:4], -1)
            winner = flat.argmax(axis=-1)  # the gradient goes to one input per window, as in every framework
            out = np.take_along_axis(flat, winner[..., None], axis=-1)[..., 0]
            tape.append((layer, (winner, blocks.shape)))
        elif layer.kind == "flatten":
            out = a.reshape(a.shape[0], -1)  # C,H,W order: the canonical flatten
            tape.append((layer, a.shape))
        elif layer.kind == "dropout":
            # A training mask holds 0 or 1 / (1 - rate) per unit (inverted dropout); none: eval mode.
            mask = (dropout_masks or {}).get(layer.name)
            out = a if mask is None else a * mask
            tape.append((layer, mask))
        else:
            raise ValueError(f"reference has no rule for layer kind {layer.kind!r}")
        a = out
        outputs.append(out)
    return a, tape, w, outputs


def forward(weights: Weights, x, variant: str = "classic") -> np.ndarray:
    """Logits (N, 10) in float64 for canonical NCHW input x."""
    return _forward(weights, x, variant)[0]


def layer_outputs(weights: Weights, x, variant: str = "classic") -> list[np.ndarray]:
    """Every layer's output for input x, in spec order (eval mode)."""
    return _forward(weights, x, variant)[3]


def cross_entropy(logits, labels) -> float:
    """Mean softmax cross-entropy over the batch."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), np.asarray(labels)].mean())


def loss_and_grads(weights: Weights, x, labels, variant: str = "classic") -> tuple[float, dict[str, np.ndarray]]:
    """Mean cross-entropy and its float64 gradient for every canonical tensor (eval mode)."""
    _, loss, grads = forward_backward(weights, x, labels, variant)
    return loss, grads


def forward_backward(weights: Weights, x, labels, variant: str = "classic", dropout_masks=None):
    """(logits, mean cross-entropy, float64 gradient of every canonical tensor) in one pass.

    dropout_masks maps a dropout layer's name to its training mask; without one it is the identity.
    """
    logits, tape, w, _ = _forward(weights, x, variant, dropout_masks)
    labels = np.asarray(labels)
    n = len(labels)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    grad = probs
    grad[np.arange(n), labels] -= 1.0
    grad /= n
    grads = {}
    first = tape[0][0]
    for layer, saved in reversed(tape):
        h = layer.hyper
        if layer.kind == "conv":
            grad, dw, db = _conv_backward(grad, saved, w[f"{layer.name}.weight"], h["padding"], input_grad=layer is not first)
            grads[f"{layer.name}.weight"], grads[f"{layer.name}.bias"] = dw, db
        elif layer.kind == "dense":
            grads[f"{layer.name}.weight"] = grad.T @ saved
            grads[f"{layer.name}.bias"] = grad.sum(axis=0)
            grad = grad @ w[f"{layer.name}.weight"]
        elif layer.kind == "sigmoid":
            grad = grad * saved * (1.0 - saved)
        elif layer.kind == "relu":
            grad = grad * saved
        elif layer.kind == "avg_pool":
            size = h["size"]
            grad = np.repeat(np.repeat(grad, size, axis=2), size, axis=3) / size**2
        elif layer.kind == "max_pool":
            winner, blocks_shape = saved
            flat = np.zeros((*blocks_shape[:4], blocks_shape[4] * blocks_shape[5]))
            np.put_along_axis(flat, winner[..., None], grad[..., None], axis=-1)
            n_, c, hh, ww, s, _ = blocks_shape
            grad = flat.reshape(blocks_shape).transpose(0, 1, 2, 4, 3, 5).reshape(n_, c, hh * s, ww * s)
        elif layer.kind == "flatten":
            grad = grad.reshape(saved)
        elif layer.kind == "dropout" and saved is not None:
            grad = grad * saved
    ordered = {name: grads[name] for name in spec.param_shapes(variant)}
    return logits, cross_entropy(logits, labels), ordered
