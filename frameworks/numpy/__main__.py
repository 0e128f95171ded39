"""python -m frameworks.numpy summary | train ..."""

from common.cli import main
from frameworks import numpy

main(numpy)
