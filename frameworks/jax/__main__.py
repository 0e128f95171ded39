"""python -m frameworks.jax summary | train ..."""

from common.cli import main
from frameworks import jax

main(jax)
