"""Dataset loaders for real layouts, all returning the SynthRooms sample structure (see common.py).

    from openlsm.data.loaders import load_dataset
    ds = load_dataset("scannet:data/scannet_processed", split="train", resolution=256)
    ds = load_dataset("folder:/work/shared/data/rgbd_livingroom")   # Open3D RGB-D, transforms.json or COLMAP
    sample = ds[0]   # images [V,3,H,W], depths, valid, Ks, c2w (OpenCV), labels?, scene, frames
"""

from .common import Frame, MultiViewDataset, Scene, collate, view_tuples
from .folder import FolderDataset, load_folder
from .registry import LAYOUTS, detect_layout, load_dataset, parse_spec
from .replica import ReplicaNiceSlam, ReplicaSemanticNerf, load_replica
from .resize import ResizePlan, plan_resize, resize_images, resize_K, resize_nearest, resize_view
from .rgbd import Open3DRGBD, read_open3d_intrinsics, read_open3d_log
from .scannet import ScanNetProcessed
from .scannet_test import LSM_CLASSES, ScanNetTest, lsm_class_id, lsm_label_lut, read_scannet_label_table
from .scannetpp import ScanNetPP
from .synthrooms_disk import SynthRoomsDisk

__all__ = [
    "LAYOUTS", "LSM_CLASSES", "FolderDataset", "Frame", "MultiViewDataset", "Open3DRGBD", "ReplicaNiceSlam",
    "ReplicaSemanticNerf", "ResizePlan", "ScanNetPP", "ScanNetProcessed", "ScanNetTest", "Scene", "SynthRoomsDisk",
    "collate", "detect_layout", "load_dataset", "load_folder", "load_replica", "lsm_class_id", "lsm_label_lut",
    "parse_spec", "plan_resize", "read_open3d_intrinsics", "read_open3d_log", "read_scannet_label_table",
    "resize_K", "resize_images", "resize_nearest", "resize_view", "view_tuples",
]
