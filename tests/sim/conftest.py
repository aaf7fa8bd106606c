"""Simulation tests run headless: MuJoCo renders offscreen through OSMesa unless told otherwise."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
