"""Host parts (scenes + cameras) in worker processes: same samples as make_samples, CPU-only camera sampling,
worker errors raised in the caller, clean shutdown."""

import multiprocessing
import time

import pytest
import torch

from openlsm.data.synthrooms import HostPool, SynthConfig, SynthStream, make_sample, make_samples
from openlsm.data.synthrooms import dataset as dataset_mod
from openlsm.data.synthrooms import pipeline as pipeline_mod
from openlsm.data.synthrooms import sampler as sampler_mod
from openlsm.errors import OpenLSMError
from openlsm.train.data import Prefetcher, SynthRoomsSource

CFG = SynthConfig(24, 32, 3)
SEEDS = [11, 21, 5]


@pytest.fixture(autouse=True)
def _single_thread(one_thread):  # this process next to two workers on a small shared machine
    yield


@pytest.fixture(scope="module")
def pool():
    with HostPool(2) as p:
        yield p


@pytest.fixture(scope="module")
def reference():  # host parts computed here, in this process
    return make_samples(SEEDS, CFG, epoch=1)


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


def test_workers_give_the_same_samples_in_order(pool, reference):
    assert reference["valid"].float().mean() > 0.9  # real images
    assert_same(make_samples(SEEDS, CFG, 1, workers=pool), reference)
    batches = [[SEEDS[2]], SEEDS[:2], [SEEDS[2], SEEDS[0]]]
    with SynthStream(batches, CFG, workers=pool, epoch=1, prefetch=1) as stream:
        got = list(stream)
    assert len(got) == 3 and stream.stats["batches"] == 3 and stream.stats["samples"] == 5
    for seeds, out in zip(batches, got):
        assert out["scene_seed"].tolist() == seeds
        assert_same(out, make_samples(seeds, CFG, 1))  # workers=0: computed in this process
    assert torch.equal(got[0]["depths"][0], reference["depths"][2])  # the batch does not change a sample
    assert not torch.equal(got[1]["c2w"], make_samples(SEEDS[:2], CFG, 0)["c2w"])  # epoch reaches the workers


def test_host_parts_run_in_the_workers(pool, reference, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("host part computed in the main process")

    for mod, name in [(pipeline_mod, "generate_scene"), (pipeline_mod, "sample_views"), (sampler_mod, "render_depth")]:
        monkeypatch.setattr(mod, name, refuse)  # only this process sees the patch
    assert_same(make_samples(SEEDS, CFG, 1, workers=pool), reference)
    with pytest.raises(AssertionError, match="main process"):
        make_samples(SEEDS[:1], CFG, 1)


def test_cameras_are_sampled_on_the_cpu_whatever_the_render_device(reference, monkeypatch):
    probes, renders, parts = [], [], []
    real_depth, real_host = sampler_mod.render_depth, pipeline_mod.host_part

    def spy_depth(st, cams, *args, **kwargs):
        probes.append((st.device.type, st.dtype, cams.c2w.device.type))
        return real_depth(st, cams, *args, **kwargs)

    def spy_host(*args, **kwargs):
        parts.append(real_host(*args, **kwargs))
        return parts[-1]

    def fake_render(st, cams, cfg, *args):  # no ray caster on "meta": record what the device was given
        renders.append((st.device.type, cams.c2w.device.type))
        lead, hw = cams.batch_shape, (cams.height, cams.width)  # [S, V] or [V]

        def zeros(*mid, dtype=torch.float32):
            return torch.zeros(*lead, *mid, *hw, dtype=dtype, device=st.device)

        return {"rgb": zeros(3), "depth": zeros(), "valid": zeros(dtype=torch.bool), "normals": zeros(3),
                "labels": zeros(dtype=torch.long), "instances": zeros(dtype=torch.long)}

    monkeypatch.setattr(sampler_mod, "render_depth", spy_depth)
    monkeypatch.setattr(dataset_mod, "host_part", spy_host)
    monkeypatch.setattr(pipeline_mod, "render_batch", fake_render)
    monkeypatch.setattr(dataset_mod, "render", fake_render)
    out = make_samples(SEEDS, CFG, 1, device="meta")
    one = make_sample(SEEDS[1], CFG, 1, device="meta")
    assert out["images"].device.type == "meta" and one["depths"].device.type == "meta"
    assert renders == [("meta", "meta")] * 2  # the final render goes to the device...
    assert len(probes) >= 2 * len(SEEDS) and set(probes) == {("cpu", torch.float32, "cpu")}  # ...probes never do
    assert len(parts) == 4  # and the cameras are those of the CPU run, value for value
    for p, j in zip(parts, [0, 1, 2, 1]):
        assert torch.equal(p.Ks, reference["Ks"][j]) and torch.equal(p.c2w, reference["c2w"][j])
        assert p.st.device.type == "cpu"


def test_worker_errors_surface_and_the_pool_survives(pool):
    with pytest.raises(ValueError, match="views") as err:
        make_samples(SEEDS[:2], SynthConfig(24, 32, views=0), workers=pool)
    assert "sample_views" in str(err.value.__cause__)  # the worker's traceback comes along
    with SynthStream([[SEEDS[0]], [-1], [SEEDS[1]]], CFG, workers=pool, epoch=1) as stream:
        it = iter(stream)
        assert torch.equal(next(it)["depths"], make_samples(SEEDS[:1], CFG, 1)["depths"])
        with pytest.raises(ValueError, match="non-negative"):  # bad seed, raised by generate_scene in a worker
            next(it)
    assert_same(make_samples(SEEDS[:1], CFG, 1, workers=pool), make_samples(SEEDS[:1], CFG, 1))


def test_stream_shuts_down_its_workers():
    before = set(multiprocessing.active_children())
    stream = SynthStream([[s] for s in range(20, 30)], CFG, workers=2, prefetch=3)
    for i, _ in enumerate(stream):  # stop early: jobs of later batches are still queued
        if i == 0:
            break
    workers = set(multiprocessing.active_children()) - before
    assert len(workers) == 2
    t = time.perf_counter()
    stream.close()
    assert time.perf_counter() - t < 20  # queued jobs were cancelled, not run
    assert not any(p.is_alive() for p in workers) and not workers & set(multiprocessing.active_children())
    with pytest.raises(OpenLSMError, match="closed"):
        stream.pool.submit(1, CFG)


def test_training_source_with_workers_matches_and_prefetches():
    pairs = [(0, 0), (2, 0), (2, 1), (1, 1)]
    inline = SynthRoomsSource("train", 16, 3, size=3)
    ref, ref_next = inline.fetch(pairs), inline.fetch(pairs[1:])
    src = SynthRoomsSource("train", 16, 3, size=3, workers=2)
    try:
        assert_same(src.fetch(pairs), ref)
        pre = Prefetcher(src, enabled=False)  # no thread: the workers alone run ahead
        pre.schedule(1, pairs[1:])
        assert len(src.pool._kept) == 3  # started by schedule, before anything asked for them
        assert_same(pre.get(1, pairs[1:]), ref_next)
        assert not src.pool._kept  # all taken: nothing left over
    finally:
        src.close()
    cached = SynthRoomsSource("train", 16, 3, size=3, cache=True, workers=2)
    pre = Prefetcher(cached, enabled=True)  # the thread renders, the workers build scenes
    try:
        pre.schedule(0, pairs)
        assert_same(pre.get(0, pairs), ref)
        assert not cached.pool._kept and len(cached.cache) == 4
        pre.schedule(1, pairs[1:])  # all cached: nothing to start
        assert not cached.pool._kept
        assert_same(pre.get(1, pairs[1:]), ref_next)
    finally:
        pre.close()
        cached.close()
    with pytest.raises(OpenLSMError, match="workers"):
        HostPool(-1)
