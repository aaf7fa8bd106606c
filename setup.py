"""mpo_ros: an ament_python ROS 2 package that is also a plain pip package."""

from glob import glob

from setuptools import setup

PACKAGE = "mpo_ros"


def _data(dest: str, pattern: str) -> tuple[str, list[str]]:
    return (f"share/{PACKAGE}/{dest}", sorted(glob(pattern)))


setup(
    name=PACKAGE,
    version="0.1.0",
    description="Sim-to-real MPO for ROS 2 robots: train in MuJoCo or from rosbag2, export ONNX, deploy",
    license="Apache-2.0",
    python_requires=">=3.10",
    # `sim/` installs as `mpo_ros_sim` so no generic top-level `sim` module lands in site-packages.
    packages=[
        PACKAGE,
        f"{PACKAGE}.contract",
        f"{PACKAGE}.robot",
        f"{PACKAGE}.mpo",
        f"{PACKAGE}.data",
        f"{PACKAGE}.ros",
        "mpo_ros_sim",
    ],
    package_dir={"mpo_ros_sim": "sim"},
    package_data={PACKAGE: ["py.typed"], "mpo_ros_sim": ["profiles/*.yaml", "recipes/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        _data("launch", "launch/*.launch.py"),
        _data("config", "config/*.yaml"),
        _data("models", "models/*.xml"),
        _data("models", "models/*.yaml"),
        _data("models", "models/*.onnx"),
    ],
    install_requires=[
        "numpy",
        "pyyaml",
        "onnxruntime",
    ],
    extras_require={
        "train": [
            "torch",
            "mujoco",
            "gymnasium[mujoco]",
            "onnx",
            "rosbags",
            "tqdm",
            "matplotlib",
            "tensorboard",
        ],
    },
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "mpo-ros = mpo_ros.cli:main",
            "policy_node = mpo_ros.ros.policy_node:main",
            "sim_node = mpo_ros.ros.sim_node:main",
        ],
    },
)
