"""SynthRooms: procedural indoor scenes with exact RGB, depth, semantics, instances and cameras.

    from openlsm.data.synthrooms import SynthRooms, CLASSES
    ds = SynthRooms("val", resolution=(192, 256), views=3)
    sample = ds[0]        # dict of tensors, see dataset.py
    with SynthStream([[0, 1], [2, 3]], ds.cfg, device="cuda", workers=4) as stream:
        batches = list(stream)   # scenes + cameras in 4 worker processes, rendering here (pipeline.py)
"""

from .dataset import SPLITS, SynthConfig, SynthRooms, make_sample, make_samples, split_seed, worker_init_fn
from .disk import read_frame, read_scene, write_frames, write_labels_json
from .pipeline import HostPart, HostPool, SynthStream, host_part, render_parts
from .raycast import RenderConfig, merge_scenes, render, render_batch, render_depth, scene_tensors
from .sampler import SamplerConfig, sample_views
from .scene import CLASSES, SceneConfig, check_scene, generate_scene

__all__ = ["CLASSES", "SPLITS", "HostPart", "HostPool", "RenderConfig", "SamplerConfig", "SceneConfig",
           "SynthConfig", "SynthRooms", "SynthStream", "check_scene", "generate_scene", "host_part", "make_sample",
           "make_samples", "merge_scenes", "read_frame", "read_scene", "render", "render_batch", "render_depth",
           "render_parts", "sample_views", "scene_tensors", "split_seed", "worker_init_fn", "write_frames",
           "write_labels_json"]
