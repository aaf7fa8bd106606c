"""tests/robot shares the real policy-file helpers in tests/policy_files.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
