"""A robot no shipped file knows: a 3-link planar arm ("trident") written by the tests into a temp folder.

Used by the bring-your-own-robot tests: nothing in the repository names it, so every command must find
its contract and MJCF from the files the user passes.
"""

from __future__ import annotations

from pathlib import Path

MJCF = """<mujoco model="trident">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="0.0025" integrator="implicitfast"/>
  <default>
    <joint type="hinge" axis="0 0 1" damping="0.04" armature="0.004"/>
    <geom type="capsule" contype="0" conaffinity="0" size="0.015"/>
  </default>
  <worldbody>
    <body name="link1">
      <joint name="j1" range="-2.0 2.0"/>
      <geom fromto="0 0 0 0.2 0 0" mass="0.4"/>
      <body name="link2" pos="0.2 0 0">
        <joint name="j2" range="-2.2 2.2"/>
        <geom fromto="0 0 0 0.17 0 0" mass="0.3"/>
        <body name="link3" pos="0.17 0 0">
          <joint name="j3" range="-1.8 1.8"/>
          <geom fromto="0 0 0 0.1 0 0" mass="0.15"/>
          <site name="tip" pos="0.1 0 0"/>
        </body>
      </body>
    </body>
  </worldbody>
  <keyframe>
    <key name="ready" qpos="-0.5 1.2 0.6"/>
  </keyframe>
  <actuator>
    <position joint="j1" kp="25" kv="2.0" forcerange="-10 10"/>
    <position joint="j2" kp="15" kv="1.0" forcerange="-6 6"/>
    <position joint="j3" kp="6" kv="0.4" forcerange="-3 3"/>
  </actuator>
</mujoco>
"""


def write_trident(folder: Path) -> Path:
    """Write trident.xml into ``folder`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "trident.xml"
    path.write_text(MJCF)
    return path
