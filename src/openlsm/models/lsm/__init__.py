"""LSM model parts. Geometry: `GeometryNet` (DUSt3R layout), camera recovery from its point maps."""

from openlsm.models.lsm.camera_recovery import recover_cameras
from openlsm.models.lsm.geometry import GeometryConfig, GeometryNet, GeometryOutput

__all__ = ["GeometryConfig", "GeometryNet", "GeometryOutput", "recover_cameras"]

from openlsm.models.lsm.gaussian_head import GaussianHead, GaussianHeadConfig
from openlsm.models.lsm.knn import knn_mean_sq_dist, knn_mean_sq_dist_bruteforce
from openlsm.models.lsm.model import LSM, LSMConfig, LSMOutput, load_official_lsm_checkpoint

__all__ += ["LSM", "GaussianHead", "GaussianHeadConfig", "LSMConfig", "LSMOutput", "knn_mean_sq_dist",
            "knn_mean_sq_dist_bruteforce", "load_official_lsm_checkpoint"]
