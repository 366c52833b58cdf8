"""SDXL on this machine: a diffusers worker process driven by `LocalBackend`.

Importing this package does not import torch; only the worker process does.
"""

from inference.local._backend import LocalBackend

__all__ = ["LocalBackend"]
