"""python -m frameworks.pytorch summary | train ..."""

from common.cli import main
from frameworks import pytorch

main(pytorch)
