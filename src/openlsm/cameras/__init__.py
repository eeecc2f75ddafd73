"""Cameras (OpenCV convention inside), conversions at the I/O edge, and camera paths."""

from .cameras import (
    Cameras,
    invert_rigid,
    look_at,
    make_K,
    opencv_to_opengl,
    opengl_to_opencv,
    pixel_directions,
    pixel_grid,
    project,
    quat_to_rotmat,
    rotmat_to_quat,
    transform_points,
    unproject_depth,
)

__all__ = [
    "Cameras", "invert_rigid", "look_at", "make_K", "opencv_to_opengl", "opengl_to_opencv", "pixel_directions",
    "pixel_grid", "project", "quat_to_rotmat", "rotmat_to_quat", "transform_points", "unproject_depth",
]
