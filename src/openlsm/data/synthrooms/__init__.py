"""SynthRooms: procedural indoor scenes with exact RGB, depth, semantics, instances and cameras.

    from openlsm.data.synthrooms import SynthRooms, CLASSES
    ds = SynthRooms("val", resolution=(192, 256), views=3)
    sample = ds[0]        # dict of tensors, see dataset.py
"""

from .dataset import SPLITS, SynthConfig, SynthRooms, make_sample, make_samples, split_seed, worker_init_fn
from .disk import read_frame, read_scene, write_frames, write_labels_json
from .raycast import RenderConfig, merge_scenes, render, render_batch, render_depth, scene_tensors
from .sampler import SamplerConfig, sample_views
from .scene import CLASSES, SceneConfig, check_scene, generate_scene

__all__ = ["CLASSES", "SPLITS", "RenderConfig", "SamplerConfig", "SceneConfig", "SynthConfig", "SynthRooms",
           "check_scene", "generate_scene", "make_sample", "make_samples", "merge_scenes", "read_frame", "read_scene",
           "render", "render_batch", "render_depth", "sample_views", "scene_tensors", "split_seed", "worker_init_fn",
           "write_frames", "write_labels_json"]
