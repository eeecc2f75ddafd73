"""SynthRooms scene generation: coverage of classes, no interpenetration, determinism, camera placement."""

import numpy as np

from openlsm.data.synthrooms.raycast import scene_tensors
from openlsm.data.synthrooms.sampler import sample_views
from openlsm.data.synthrooms.scene import (
    CLASSES,
    check_scene,
    generate_scene,
    points_inside_prims,
    points_inside_room,
)


def test_classes_appear_and_objects_do_not_interpenetrate():
    seen = set()
    for seed in range(250):
        scene = generate_scene(seed)
        check_scene(scene)  # prim AABBs of different objects disjoint, everything inside the room
        for arr in (scene.prim_centers, scene.prim_halves, scene.prim_ratios, scene.prim_yaws, scene.lights):
            assert np.isfinite(arr).all()
        assert (scene.prim_halves > 0).all()
        size = scene.room_hi[:, :2].max(0) - scene.room_lo[:, :2].min(0)
        assert 3.0 <= size.min() and size.max() <= 8.0 and 2.4 <= scene.height <= 3.2
        assert (np.diff(scene.prim_types) >= 0).all()  # grouped by type for the renderer
        seen.update(scene.object_names())
    assert set(CLASSES) - {"void", "wall", "floor", "ceiling"} <= seen


def test_l_shaped_rooms_exist_and_have_six_walls():
    shapes = {len(generate_scene(s).walls) for s in range(40)}
    assert shapes == {4, 6}


def test_generation_is_deterministic():
    a, b = generate_scene(42), generate_scene(42)
    for k in ("prim_types", "prim_centers", "prim_halves", "prim_ratios", "prim_yaws", "prim_mats",
              "object_classes", "lights", "shell_mats"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert not np.array_equal(generate_scene(43).prim_centers.shape, a.prim_centers.shape) or \
        not np.allclose(generate_scene(43).prim_centers, a.prim_centers)


def test_cameras_never_inside_geometry():
    for seed in range(12):
        scene = generate_scene(seed)
        st = scene_tensors(scene)
        cams, info = sample_views(st, scene, np.random.default_rng(seed), 32, 24, views=3)
        eyes = cams.c2w[:, :3, 3].double().numpy()
        assert points_inside_room(eyes, scene, margin=0.05).all()
        assert not points_inside_prims(eyes, scene).any()
        assert ((eyes[:, 2] >= 1.2 - 1e-6) & (eyes[:, 2] <= 1.8 + 1e-6)).all()
        fov = np.degrees(cams.fov_x.numpy())
        assert ((fov >= 50 - 1e-3) & (fov <= 90 + 1e-3)).all()
        # target on or near the segment between the two inputs
        a, b, t = eyes[0], eyes[1], eyes[2]
        s = np.clip(np.dot(t - a, b - a) / max(np.dot(b - a, b - a), 1e-9), -0.25, 1.25)
        assert np.linalg.norm(t - (a + s * (b - a))) < 0.5
        assert 0.0 <= info["covisibility"] <= 1.0
