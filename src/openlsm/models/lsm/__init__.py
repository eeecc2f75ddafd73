"""LSM model parts. Geometry: `GeometryNet` (DUSt3R layout), camera recovery from its point maps."""

from openlsm.models.lsm.camera_recovery import recover_cameras
from openlsm.models.lsm.geometry import GeometryConfig, GeometryNet, GeometryOutput

__all__ = ["GeometryConfig", "GeometryNet", "GeometryOutput", "recover_cameras"]
