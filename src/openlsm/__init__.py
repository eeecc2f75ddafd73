"""openlsm: feed-forward semantic 3D reconstruction (Large Spatial Model) on CPU and GPU."""

__version__ = "0.1.0"
