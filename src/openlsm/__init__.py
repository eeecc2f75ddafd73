"""openlsm: feed-forward semantic 3D reconstruction (Large Spatial Model) on CPU and GPU.

    from openlsm import LSM, load_images
    model = LSM.load("path/to/weights", device="cpu")          # or openlsm.load_lsm(None): shipped weights
    scene = model.reconstruct(load_images(["a.jpg", "b.jpg"]), labels=["wall", "floor", "chair"])
    scene.segment(["sofa", "table"]); scene.render(scene.cameras); scene.save("out")

Names are imported lazily, so `import openlsm` stays light (no torch import until one is used).
"""

__version__ = "0.1.0"

_LAZY = {
    "LSM": ("openlsm.models.lsm.model", "LSM"),
    "LSMConfig": ("openlsm.models.lsm.model", "LSMConfig"),
    "load_image": ("openlsm.io.images", "load_image"),
    "load_images": ("openlsm.io.images", "load_images"),
    "prepare_images": ("openlsm.io.images", "prepare_images"),
    "reconstruct": ("openlsm.reconstruct", "reconstruct"),
    "load_lsm": ("openlsm.reconstruct", "load_lsm"),
    "Scene": ("openlsm.scene", "Scene"),
    "Cameras": ("openlsm.cameras", "Cameras"),
    "Gaussians": ("openlsm.gaussians", "Gaussians"),
    "OpenLSMError": ("openlsm.errors", "OpenLSMError"),
    "keep_freed_memory": ("openlsm.runtime", "keep_freed_memory"),
}

__all__ = [
    "LSM",
    "Cameras",
    "Gaussians",
    "LSMConfig",
    "OpenLSMError",
    "Scene",
    "__version__",
    "keep_freed_memory",
    "load_image",
    "load_images",
    "load_lsm",
    "prepare_images",
    "reconstruct",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'openlsm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
