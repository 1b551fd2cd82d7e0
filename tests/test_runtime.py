"""Unit tests of theorylab.runtime: profiles, validation messages, seeding, devices, metrics."""
import json

import numpy as np
import pytest
import threadpoolctl
import torch

from theorylab import chapters, runtime

CHAPTER = "contract-design"


def test_resolve_takes_profile_values_and_overrides():
    spec = chapters.chapter(CHAPTER)
    ci = runtime.resolve(CHAPTER, "ci", "cpu", 3)
    full = runtime.resolve(CHAPTER, "full", "cpu", 3, n_starts=7)
    assert ci["n_starts"] == spec.params["n_starts"].ci and ci["seed"] == 3 and ci["device"] == "cpu"
    assert full["n_starts"] == 7 and full["dense_max"] == spec.params["dense_max"].full


def test_resolve_converts_command_line_strings():
    values = runtime.resolve(CHAPTER, "ci", "cpu", 0, n_starts="5", cap_max="1.5", scaling_sizes="100, 200")
    assert values["n_starts"] == 5 and values["cap_max"] == 1.5 and values["scaling_sizes"] == (100, 200)


@pytest.mark.parametrize("overrides,fragment", [
    ({"n_starts": -3}, "parameter 'n_starts': got -3, expected an integer >= 1"),
    ({"n_starts": "many"}, "parameter 'n_starts': got 'many'"),
    ({"n_starts": 2.5}, "parameter 'n_starts': got 2.5"),
    ({"n_starts": True}, "parameter 'n_starts': got True"),
    ({"cap_max": "inf"}, "parameter 'cap_max'"),
    ({"scaling_sizes": "1000,-5"}, "parameter 'scaling_sizes'"),
    ({"scaling_sizes": "1000,abc"}, "parameter 'scaling_sizes'"),
    ({"n_tasks": 3}, "unknown parameter(s) ['n_tasks']"),
])
def test_bad_parameters_are_named_with_value_and_allowed_range(overrides, fragment):
    with pytest.raises(ValueError) as error:
        runtime.resolve(CHAPTER, "ci", "cpu", 0, **overrides)
    assert fragment in str(error.value)


def test_unknown_profile_chapter_seed_and_device_are_rejected():
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        runtime.resolve(CHAPTER, "huge")
    with pytest.raises(ValueError, match="unknown chapter 'nope'; known chapters: .*contract-design"):
        runtime.resolve("nope")
    with pytest.raises(ValueError, match="seed: got -1"):
        runtime.resolve(CHAPTER, seed=-1)
    with pytest.raises(ValueError, match="device: got 'gpu'"):
        runtime.resolve(CHAPTER, device="gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_where_there_is_none_is_an_error_not_a_fallback():
    with pytest.raises(ValueError, match="CUDA is not available"):
        runtime.resolve(CHAPTER, device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        runtime.resolve(CHAPTER, device="cuda:1")
    assert runtime.resolve(CHAPTER, device="auto")["device"] == "cpu"


def test_configure_seeds_every_generator_and_pins_one_thread():
    first = runtime.configure("ci", "cpu", 11, chapter=CHAPTER)
    draws = (np.random.rand(), torch.rand(1).item())
    runtime.configure("ci", "cpu", 11, chapter=CHAPTER)
    assert (np.random.rand(), torch.rand(1).item()) == draws
    assert torch.get_num_threads() == 1
    assert all(pool["num_threads"] == 1 for pool in threadpoolctl.threadpool_info())  # NumPy's BLAS too
    assert first.n_starts == chapters.chapter(CHAPTER).params["n_starts"].ci
    with pytest.raises(AttributeError):
        _ = first.no_such_knob


def test_record_writes_metrics_json_in_a_cli_run(tmp_path, monkeypatch):
    monkeypatch.setenv(runtime.RUN_DIR_ENV, str(tmp_path))
    monkeypatch.delenv("THEORYLAB_COMPARE_BASELINES", raising=False)  # a made-up check has no baseline
    cfg = runtime.configure("ci", "cpu", 0, chapter=CHAPTER)
    cfg.record("check", error=np.float64(1e-12), values=np.array([1.0, 2.0]), by_n={1000: 0.5})
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["chapter"] == CHAPTER and saved["checks"]["check"] == {
        "error": 1e-12, "values": [1.0, 2.0], "by_n": {"1000": 0.5}}


@pytest.mark.parametrize("value,text", [(3.1e-12, "1e-11"), (1e-12, "1e-12"), (0.2, "1e0"), (0.0, "0"), (-4e-9, "1e-8")])
def test_order_of_is_the_power_of_ten_at_or_above(value, text):
    assert runtime.order_of(value) == text


def test_median_seconds_rejects_zero_repeats():
    with pytest.raises(ValueError, match="repeats"):
        runtime.median_seconds(lambda: None, repeats=0)


def test_checkpoint_reuses_a_saved_value_only_for_the_same_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv(runtime.RUN_DIR_ENV, str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return {"value": len(calls)}

    cfg = runtime.configure("ci", "cpu", 0, chapter=CHAPTER)
    assert cfg.checkpoint("block", compute) == {"value": 1}
    assert runtime.configure("ci", "cpu", 0, chapter=CHAPTER).checkpoint("block", compute) == {"value": 1}
    changed = runtime.configure("ci", "cpu", 0, chapter=CHAPTER, n_starts=3)
    assert changed.checkpoint("block", compute) == {"value": 2}  # other parameters: recomputed
    assert len(calls) == 2 and not list(tmp_path.glob("checkpoints/*.partial"))
    with pytest.raises(ValueError, match="checkpoint name"):
        cfg.checkpoint("../escape", compute)


def test_checkpoint_outside_a_cli_run_just_computes(monkeypatch):
    monkeypatch.delenv(runtime.RUN_DIR_ENV, raising=False)
    cfg = runtime.configure("ci", "cpu", 0, chapter=CHAPTER)
    assert cfg.checkpoint("block", lambda: 42) == 42


def test_every_knob_of_every_chapter_validates_in_every_profile_and_under_smoke():
    for name, spec in chapters.CHAPTERS.items():
        for profile, smoke in (("ci", False), ("full", False), ("full", True)):
            values = runtime.resolve(name, profile, "cpu", 0, smoke)
            assert all(values[k] == p.validate(k, p.value(profile, smoke)) for k, p in spec.params.items())


def test_smoke_takes_the_smoke_values_and_needs_the_full_profile():
    spec = chapters.chapter(CHAPTER)
    values = runtime.resolve(CHAPTER, "full", "cpu", 0, smoke=True)
    assert values["smoke"] is True and values["n_starts"] == spec.params["n_starts"].smoke
    with pytest.raises(ValueError, match="smoke shrinks the full profile"):
        runtime.resolve(CHAPTER, "ci", "cpu", 0, smoke=True)
    with pytest.raises(ValueError, match="smoke: got 'yes'"):
        runtime.resolve(CHAPTER, "full", "cpu", 0, smoke="yes")


def test_chapters_without_a_gpu_role_run_on_the_cpu_and_the_others_keep_the_device(monkeypatch):
    monkeypatch.setattr(runtime, "check_device", lambda device: "cuda")  # as on a machine with a GPU
    for name, spec in chapters.CHAPTERS.items():
        device = runtime.resolve(name, "full", "cuda", 0)["device"]
        assert device == ("cuda" if spec.gpu else "cpu"), name
        assert bool(spec.gpu) != bool(spec.cpu_reason)
    with pytest.raises(ValueError, match="exactly one of gpu"):
        chapters.ChapterSpec("x", "x", "x.ipynb", {}, 1, 1, gpu="", cpu_reason="")


def test_threads_one_in_ci_and_smoke_every_core_in_full(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    runtime.configure("ci", "cpu", 0, chapter=CHAPTER)
    runtime.configure("full", "cpu", 0, chapter=CHAPTER, smoke=True)
    runtime.configure("full", "cpu", 0, chapter=CHAPTER)  # leaves torch's default: no call
    runtime.configure("full", "cpu", 0, chapter=CHAPTER, threads=3)
    assert calls == [1, 1, 3]
    with pytest.raises(ValueError, match="threads"):
        runtime.configure("ci", "cpu", 0, chapter=CHAPTER, threads=0)


def test_from_notebook_reads_the_parameters_cell_and_names_what_is_missing():
    spec = chapters.chapter(CHAPTER)
    namespace = {"profile": "full", "device": "cpu", "seed": 4, "smoke": True,
                 **{name: None for name in spec.params}, "n_starts": 3, "unrelated": object()}
    config = runtime.from_notebook(namespace, CHAPTER)
    assert (config.profile, config.seed, config.smoke, config.n_starts) == ("full", 4, True, 3)
    assert config.mc_replications == spec.params["mc_replications"].smoke
    del namespace["dense_max"]
    with pytest.raises(ValueError, match=r"does not define \['dense_max'\]"):
        runtime.from_notebook(namespace, CHAPTER)


def test_metrics_record_the_hardware(tmp_path, monkeypatch):
    monkeypatch.setenv(runtime.RUN_DIR_ENV, str(tmp_path))
    config = runtime.configure("full", "cpu", 0, chapter=CHAPTER, smoke=True)
    config.record("a_check", value=1.0)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["smoke"] is True and metrics["device"] == "cpu" and metrics["device_name"]
    assert metrics["torch_threads"] == torch.get_num_threads() and metrics["cpu_capability"]


def test_median_seconds_times_the_calls_not_the_warm_up():
    import time

    calls = []

    def work():
        calls.append(None)
        time.sleep(0.05 if len(calls) == 1 else 0.001)

    assert runtime.median_seconds(work, repeats=3) < 0.04 and len(calls) == 4


def test_a_full_run_without_its_data_stops_in_configure_naming_the_set(tmp_path, monkeypatch):
    import urllib.request

    from theorylab import data

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(data.DatasetUnavailable, match="MNIST is not in"):
        runtime.configure("full", "cpu", 0, chapter="sparse-network-bounds")
    runtime.configure("full", "cpu", 0, chapter="sparse-network-bounds", smoke=True)  # stand-ins: no data needed
    assert not [path for path in tmp_path.rglob("*") if path.is_file()]  # nothing half-downloaded left


def test_background_runs_in_another_process_and_reuses_its_checkpoint(tmp_path, monkeypatch):
    import math

    monkeypatch.setenv("THEORYLAB_RUN_DIR", str(tmp_path))
    cfg = runtime.configure("ci", "cpu", 0, chapter="contract-design", threads=None)
    job = cfg.background("factorial", math.factorial, 20)
    assert job.started and job.result() == math.factorial(20)
    again = cfg.background("factorial", math.factorial, 20)
    assert not again.started and again.result() == math.factorial(20)  # from the checkpoint
