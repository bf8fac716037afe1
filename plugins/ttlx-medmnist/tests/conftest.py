"""Let the tests import the plugin from its source tree when it is not installed."""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("ttlx_medmnist") is None:
    sys.path.insert(0, str(Path(__file__).parents[1] / "src"))
