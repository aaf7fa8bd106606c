# Two commands for users: `make demo` and `make test`. Both set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch; GPU users: see README ("CUDA").
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

export MUJOCO_GL ?= osmesa
export PYOPENGL_PLATFORM ?= osmesa
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: venv demo test lint bench clean test-jazzy

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt setup.py
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	$(PIP) install -q "$(TORCH_PIN)"
	$(PIP) install -q -r requirements.txt -r requirements-dev.txt
	$(PIP) install -q --no-deps -e .
	@bash scripts/install_system_deps.sh || echo "warning: could not install libosmesa6; video rendering disabled"
	@touch $(STAMP)

demo: venv
	$(PY) -m mpo_ros.tools.demo

# One process: with two pytest-xdist workers the ROS tests' timing windows failed next to a learning test
# on the other core (3 of ~80 ROS tests in a fresh-clone run). `pytest -n 2 --dist loadgroup` works for a
# quicker local run of the non-ROS tests (the Ray tests keep to one worker: xdist_group("ray")).
test: venv
	$(VENV)/bin/ruff check mpo_ros sim tests benchmarks
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check mpo_ros sim tests benchmarks
	$(VENV)/bin/ruff format --check mpo_ros sim tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info

# ROS 2 Jazzy (LTS) as well as Kilted: a second venv (Python 3.12, the ros-jazzy-* wheels) runs the ROS
# tests. It has no torch; the tests' analytic-IK policy is exported in the main venv and handed over.
PYTHON312 ?= PYENV_VERSION=3.12.1 python3.12
JAZZY_VENV := .venv-jazzy
JAZZY_PY := $(JAZZY_VENV)/bin/python
JAZZY_STAMP := $(JAZZY_VENV)/.installed

$(JAZZY_STAMP): requirements-jazzy.txt setup.py
	@test -d $(JAZZY_VENV) || $(PYTHON312) -m venv $(JAZZY_VENV)
	$(JAZZY_PY) -m pip install -q --upgrade pip
	$(JAZZY_PY) -m pip install -q -r requirements-jazzy.txt
	$(JAZZY_PY) -m pip install -q --no-deps -e .
	@touch $(JAZZY_STAMP)

test-jazzy: venv $(JAZZY_STAMP)
	$(PY) tests/ros/reach_policy.py .jazzy/arm2_ik.onnx
	$(PY) tests/velocity_robot.py .jazzy/velocity
	$(JAZZY_PY) -c "import rclpy, sys; print('rclpy from', rclpy.__file__, 'Python', sys.version.split()[0])"
	MPO_ROS_TEST_IK_POLICY=$(CURDIR)/.jazzy/arm2_ik.onnx MPO_ROS_TEST_VELOCITY_DIR=$(CURDIR)/.jazzy/velocity $(JAZZY_PY) -m pytest -q -p no:cacheprovider tests/ros
