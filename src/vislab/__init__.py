"""vislab: an image-classification workbench on PyTorch.

The Python API mirrors the CLI one to one in :mod:`vislab.api` (``train``,
``evaluate``, ``predict``); the names below are re-exported here. ``train`` and
``evaluate`` are also sub-packages, so at the top level they are called
``fit`` and ``evaluate_run``.

Example:
    >>> import vislab
    >>> model = vislab.create_model("mlp", num_classes=10, in_chans=1)
    >>> result = vislab.fit(data="digits", model="chollet_convnet", epochs=2)   # doctest: +SKIP
    >>> loaded = vislab.load(result.run_dir)                                     # doctest: +SKIP
"""

__version__ = "0.1.0"

__all__ = ["create_model", "load", "fit", "evaluate_run", "predict", "make_config", "__version__"]

_API = {"fit": "train", "evaluate_run": "evaluate", "predict": "predict", "make_config": "make_config"}


def __getattr__(name):
    # Lazy: `import vislab` stays cheap and the CLI's --help does not import torch.
    if name == "create_model":
        from vislab.models.registry import create_model

        return create_model
    if name == "load":
        from vislab.runs import load

        return load
    if name in _API:
        from vislab import api

        return getattr(api, _API[name])
    raise AttributeError(f"module 'vislab' has no attribute {name!r}")
