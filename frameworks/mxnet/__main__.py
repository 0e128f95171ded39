"""python -m frameworks.mxnet summary | train ..."""

from common.cli import main
from frameworks import mxnet

main(mxnet)
