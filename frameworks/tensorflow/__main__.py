"""python -m frameworks.tensorflow summary | train ..."""

from common.cli import main
from frameworks import tensorflow

main(tensorflow)
