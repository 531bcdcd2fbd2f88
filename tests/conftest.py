"""Test set-up: four CPU devices, so data-parallel code is tested here too
(as Flax does), and a quiet TensorFlow."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
