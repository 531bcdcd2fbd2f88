"""radars_jax: memory-budgeted differentiable NAS (RADARS) in JAX and Flax."""
from setuptools import find_packages, setup

setup(
    name="radars_jax",
    version="0.1.0",
    description="RADARS: memory-budgeted, RL-aided differentiable NAS in JAX/Flax",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["radars_jax", "radars_jax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.30",
        "flax>=0.8",
        "optax>=0.2",
        "chex>=0.1.86",
        "orbax-checkpoint>=0.5",
        "ml_collections>=0.1.1",
        "absl-py>=1.0",
        # tfds loads CIFAR; tensorflow-cpu is what tfds needs to read its
        # records (imported lazily, only when a tfds dataset is asked for).
        "tensorflow-datasets>=4.9",
        "tensorflow-cpu>=2.15",
        # Imported by tfds's preparation (DatasetBuilder.code_path, reached
        # from download_and_prepare) but not in tfds's own requirements.
        "importlib_resources>=5",
        "scikit-learn>=1.3",   # ships the `digits` dataset: offline quickstart
        "tensorboardX>=2.6",   # TensorBoard event files without importing TF
        "tqdm>=4.60",          # progress bars
        "matplotlib>=3.7",     # plots and reports
        "numpy>=1.24",
        # pure-JAX RL environments (MinAtar, CartPole) for agent search,
        # imported only when an environment is made
        "gymnax>=1.0",
    ],
    extras_require={
        # pytest-xdist: the suite runs in two workers (README "Tests")
        "test": ["pytest>=7", "pytest-xdist>=3", "nbclient>=0.9", "nbformat>=5.9",
                 "ipykernel>=6"],
    },
)
