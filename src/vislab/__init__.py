"""vislab: an image-classification workbench on PyTorch."""

__version__ = "0.1.0"
