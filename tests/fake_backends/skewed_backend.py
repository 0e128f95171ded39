"""The NumPy backend with logits off by 1e-3: it runs fine, but the forward parity check must fail."""

from tests.fake_backends.numpy_backend import *  # noqa: F401,F403
from tests.fake_backends import numpy_backend


def forward(model, x):
    return numpy_backend.forward(model, x) + 1e-3
