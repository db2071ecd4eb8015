"""The smoke suite of an installed wheel (scripts/test.d/35-wheel.sh runs it in fresh venvs of
the oldest and newest CPython present). It reuses the dev suite's helpers in tests/python
(redis-server processes, bot processes, the seed usage block), not its fixtures."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
