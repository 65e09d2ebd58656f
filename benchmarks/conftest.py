import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import data_dir, faces_dir, lfw_dir, models_env, spoof_dir  # noqa: E402,F401
