"""The memory budget tracer (benchmarks/memory_budget.py) on the tiny preset: the fake-tensor trace
gives the bytes a real step allocates, and its exact rows are exact."""

from __future__ import annotations

import json

import pytest

from benchmarks.memory_budget import MARKER, trace_step, write_random_sd15


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_random_sd15(tmp_path_factory.mktemp("sd") / "tiny_sd", preset="tiny")


def test_folder_is_a_diffusers_layout_written_whole(folder):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    assert json.loads((folder / MARKER).read_text())["weights"] == "random"
    assert not folder.with_name(folder.name + ".partial").exists()
    assert UNet2DConditionModel.load_config(folder / "unet")["cross_attention_dim"] == 32
    assert AutoencoderKL.load_config(folder / "vae")["latent_channels"] == 4


@pytest.mark.slow
def test_traced_step_matches_a_real_step(folder):
    fake = trace_step(folder, "stage2", preset="tiny", checkpointing=False)
    real = trace_step(folder, "stage2", preset="tiny", checkpointing=False, fake=False)
    for key in ("param_bytes", "grad_bytes", "optimizer_bytes", "input_bytes"):
        assert fake[key] == real[key], key
    for key in ("activation_bytes", "peak_bytes"):  # same ops, CPU kernels vs their fake (meta) versions
        assert fake[key] == pytest.approx(real[key], rel=0.02), key
    # the exact rows: fp32 trainable weights, bf16 frozen ones, fp32 grads, Adam's two moments + step
    n = fake["trainable_params"]
    assert fake["trainable_param_bytes"] == 4 * n and fake["grad_bytes"] == 4 * n
    assert fake["frozen_param_bytes"] == 2 * fake["frozen_params"]
    assert 8 * n < fake["optimizer_bytes"] < 8 * n + 4 * 10_000
    assert fake["peak_bytes"] >= fake["param_bytes"] + fake["grad_bytes"] + fake["optimizer_bytes"]


@pytest.mark.slow
def test_checkpointing_and_the_memory_work_shrink_the_traced_budget(folder):
    now = trace_step(folder, "stage2", preset="tiny", frames=8)
    before = trace_step(folder, "stage2", preset="tiny", frames=8, before=True)
    plain = trace_step(folder, "stage2", preset="tiny", frames=8, checkpointing=False)
    assert before["frozen_param_bytes"] == 4 * before["frozen_params"] == 2 * now["frozen_param_bytes"]
    assert now["activation_bytes"] < before["activation_bytes"] < plain["activation_bytes"]
    assert now["peak_bytes"] < before["peak_bytes"]
