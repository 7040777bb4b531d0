"""Memory budget of one training step at paper size, traced on the CPU (no GPU, no weights in memory).

The model is built exactly as a user's run builds it: ``pretrained_sd15`` pointing at a diffusers
SD1.5-layout folder (``write_random_sd15`` writes one, random weights, with ``save_pretrained``),
``build_model`` for the stage, ``enable_gradient_checkpointing``, frozen weights held in bf16.
The build and one whole step (VAE encode, reference pass, denoiser forward, backward, Adam step)
then run under torch's FakeTensorMode: every tensor has its real shape, dtype and CPU-kernel
behaviour (bf16 autocast, flash-style attention that keeps only the log-sum-exp) but no storage,
and a dispatch mode (LiveBytes) adds up the bytes of the storages alive after each op.

What the rows are:
  * parameters / gradients / optimizer state: exact (the real parameter shapes and dtypes; the real
    ``torch.optim.Adam`` state after a step).
  * activations: bytes of forward tensors still alive when the forward ends (held for backward);
    peak: the largest total during the step. These are live-tensor bytes of CPU kernels: a GPU run
    adds the CUDA allocator's rounding and fragmentation, cuDNN/cuBLAS workspaces and its own
    kernels' saved tensors (e.g. GroupNorm outputs in float32 under CUDA autocast). A GPU figure is
    only what ``scripts/gpu_check.sh`` measures there; these are labelled "traced (CPU)".

The prepared conditions (``prepare_batch``'s output) are made for real at 64^2 outside the trace
(its flip is data-dependent), then handed to the step as fake tensors of the same layout at the
step's resolution and counted as inputs; ``prepare_batch``'s own temporaries (on a GPU they come and
go before the forward) are not in the trace.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from benchmarks.train_step import synthetic_batch
from trainer import train as T
from trainer.conditions import prepare_batch
from trainer.config import load_config
from trainer.latents import vae_config
from trainer.model import build_model, unet_config
from trainer.reference_attention import ReaderProcessor

ADAM = {"fused": dict(fused=True), "foreach": dict(foreach=True), "for-loop": dict(foreach=False)}
MARKER = "manivideo_random_sd15.json"  # written last: a folder without it is unfinished
GB = 2**30


# a diffusers SD1.5-layout folder has a VAE: the budget is traced in SD's latent space (the tiny preset's
# own default is the pixel-patch latent, trainer.latents), predicting epsilon as SD does
SD_LATENT = {"latent": "vae", "prediction_type": "epsilon"}

def write_random_sd15(folder: str | Path, seed: int = 0, preset: str = "sd15") -> Path:
    """A diffusers SD1.5-layout folder (unet/, vae/ via ``save_pretrained``) with random weights,
    stored in float16 like SD1.5's fp16 files (1.8 GB; a float32 model loads them as float32).
    Reused when its marker exists; written to a temporary folder and renamed, so a killed run
    leaves nothing that looks finished. ``preset``: tiny writes the tiny preset's layout (tests)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    folder = Path(folder)
    if (folder / MARKER).is_file():
        return folder
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cfg = load_config(preset, overrides=SD_LATENT)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)  # 1.7 GB for the UNet instead of 3.4 GB
    try:
        torch.manual_seed(seed)
        UNet2DConditionModel(**unet_config(cfg)).save_pretrained(tmp / "unet")
        AutoencoderKL(**vae_config(cfg)).save_pretrained(tmp / "vae")
    finally:
        torch.set_default_dtype(default)
    (tmp / MARKER).write_text(json.dumps({"layout": f"trainer.model.unet_config/trainer.latents.vae_config of {preset}",
                                          "weights": "random", "seed": seed, "dtype": "float16"}))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


@contextlib.contextmanager
def real_file_reads():
    """diffusers' weight-file reader runs outside the fake mode (safetensors cannot read into fake
    tensors): the state dict is real (float16, 1.7 GB for the UNet, freed after the copy) and is
    copied into the fake model by diffusers' own loading code, as in a user's run."""
    from diffusers.models import model_loading_utils, modeling_utils
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    original = model_loading_utils.load_state_dict

    def load(*args, **kwargs):
        with unset_fake_temporarily():
            return original(*args, **kwargs)

    patched = [m for m in (model_loading_utils, modeling_utils) if getattr(m, "load_state_dict", None) is original]
    for m in patched:
        m.load_state_dict = load
    try:
        yield
    finally:
        for m in patched:
            m.load_state_dict = original


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages alive, and their peak, over the ops run inside it (forward,
    backward with checkpoint recomputes, optimizer step). ``track`` adds storages made before
    (parameters, inputs). A storage counts once, however many views share it, until it is freed.
    (torch's MemTracker does this by module, but refuses a module called twice in a step, as the
    VAE and the chunked encoder are.)"""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._refs: dict[int, weakref.ref] = {}

    def _add(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        key = id(st)
        if key in self._refs and self._refs[key]() is st:
            return
        n = st.nbytes()

        def freed(_, key=key, n=n):
            self._refs.pop(key, None)
            self.live -= n

        self._refs[key] = weakref.ref(st, freed)
        self.live += n
        self.peak = max(self.peak, self.live)

    def track(self, *tensors: torch.Tensor) -> None:
        for t in tensors:
            self._add(t)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._add(t)
        return out


def _at_resolution(cond: dict, r: int) -> dict:
    """Fake tensors of ``cond``'s layout with image-shaped entries ([..., R, R]) at side ``r``
    (call inside the fake mode; nothing is allocated)."""
    side = next(v.shape[-1] for k, v in cond.items() if k == "target")
    out = {}
    for k, v in cond.items():
        if torch.is_tensor(v) and v.dim() >= 4 and v.shape[-2:] == (side, side):
            out[k] = torch.empty(*v.shape[:-2], r, r, dtype=v.dtype)
        else:
            out[k] = torch.empty(v.shape, dtype=v.dtype) if torch.is_tensor(v) else v
    return out


def configure_before(model) -> None:
    """The landed code's memory behaviour, for the side-by-side row: reference tokens repeated per
    frame, the VAE in one call, motion modules not checkpointed (diffusers' checkpointing only)."""
    for p in model.unet.attn_processors.values():
        if isinstance(p, ReaderProcessor):
            p.per_clip = False
    model.vae_chunk = 1 << 30


def trace_step(folder: str | Path, stage: str, checkpointing: bool = True, before: bool = False,
               frames: int | None = None, batch: int | None = None, resolution: int | None = None,
               optimizer: str = "fused", preset: str = "sd15", fake: bool = True, configure=None) -> dict:
    """One bf16 training step of the sd15 preset built from ``folder``; returns bytes by kind.

    ``before``: the code as it was before the memory work (frozen weights float32, per-frame
    reference K/V, one VAE call, motion modules not checkpointed). ``frames``/``batch``/``resolution``
    default to the paper's (stage 1: batch 4; stage 2: 24 frames, batch 1; 512^2). ``fake=False``
    runs the same step for real (tests compare the two on the tiny preset). ``optimizer``: the Adam
    implementation, "fused" (what the trainer uses on CUDA), "foreach" (torch's CUDA default) or
    "for-loop" (see ``trace_optimizer``). ``configure(model)``: called last, to trace one change alone."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    over = dict(pretrained_sd15=str(folder), gradient_checkpointing=checkpointing, mixed_precision="bf16")
    if frames:
        over["frames"] = frames
    if batch:
        over["stage1_batch" if stage == "stage1" else "stage2_batch"] = batch
    if resolution:
        over["resolution"] = resolution
    cfg = load_config(preset, overrides={**SD_LATENT, **over})
    f = 1 if stage == "stage1" else cfg.frames
    b = cfg.batch(stage)
    cpu = torch.device("cpu")
    small = prepare_batch(synthetic_batch(b, f, 64), cfg.mlo_mode, cfg.tau, 64, cpu)  # the layout, cheaply
    t0 = time.perf_counter()
    with FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext():
        with real_file_reads() if fake else contextlib.nullcontext():
            model = build_model(cfg, stage)  # reads the folder like a user's run
        if checkpointing:
            if before:
                model.unet.enable_gradient_checkpointing()
                model.reference_unet.enable_gradient_checkpointing()
            else:
                model.enable_gradient_checkpointing()
        if before:
            configure_before(model)
        else:
            model.hold_frozen_in(torch.bfloat16)
        if configure is not None:
            configure(model)
        params = [p for p in model.parameters() if p.requires_grad]
        frozen = [p for p in model.parameters() if not p.requires_grad]
        opt = torch.optim.Adam(params, lr=cfg.lr(stage), **ADAM[optimizer])
        fake_cond = _at_resolution(small, cfg.resolution)
        sched = T.make_scheduler(cfg)
        gen = torch.Generator().manual_seed(0)
        live = LiveBytes()
        live.track(*model.parameters(), *[v for v in fake_cond.values() if torch.is_tensor(v)])
        start = live.live
        with live:
            loss = T.diffusion_loss(model, model, None, sched, gen, cfg, cpu, cond=fake_cond)
            after_forward = live.live
            loss.backward()
            grad_bytes = sum(p.grad.nbytes for p in params if p.grad is not None)
            opt.step()
            opt.zero_grad(set_to_none=True)
        opt_bytes = sum(t.nbytes for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
    return {
        "stage": stage, "frames": f, "batch": b, "resolution": cfg.resolution, "checkpointing": checkpointing,
        "before": before, "optimizer": optimizer, "trainable_params": sum(p.numel() for p in params),
        "frozen_params": sum(p.numel() for p in frozen),
        "param_bytes": sum(p.nbytes for p in params) + sum(p.nbytes for p in frozen),
        "trainable_param_bytes": sum(p.nbytes for p in params), "frozen_param_bytes": sum(p.nbytes for p in frozen),
        "grad_bytes": grad_bytes, "optimizer_bytes": opt_bytes, "activation_bytes": after_forward - start,
        "input_bytes": start - sum(p.nbytes for p in model.parameters()), "peak_bytes": live.peak,
        "trace_s": time.perf_counter() - t0,
    }


def trace_optimizer(folder: str | Path, stage: str, impl: str, preset: str = "sd15") -> dict:
    """Adam's memory at ``stage``'s trainable parameters (built from ``folder``): the state after a
    step, and the transient peak of a second step above params + grads + state. ``impl``:
    "foreach" (torch's default on CUDA), "for-loop" (foreach=False) or "fused"."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    cfg = load_config(preset, overrides=dict(SD_LATENT, pretrained_sd15=str(folder)))
    with FakeTensorMode(allow_non_fake_inputs=True), real_file_reads():
        model = build_model(cfg, stage)
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            p.grad = torch.empty_like(p)
        opt = torch.optim.Adam(params, lr=1e-5, **ADAM[impl])
        opt.step()
        live = LiveBytes()
        live.track(*params, *[p.grad for p in params], *[t for s in opt.state.values() for t in s.values()
                                                        if torch.is_tensor(t)])
        base = live.live
        with live:
            opt.step()
        state = sum(t.nbytes for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
    return {"impl": impl, "trainable_params": sum(p.numel() for p in params), "state_bytes": state,
            "step_transient_bytes": live.peak - base}


def trace_flops(folder: str | Path, stage: str, per_clip: bool, preset: str = "sd15") -> float:
    """FLOPs of one training step (forward, recompute, backward; torch's FlopCounterMode on fake
    tensors) with the reference K/V once per clip (``per_clip``) or per frame (the earlier path)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    cfg = load_config(preset, overrides=dict(SD_LATENT, pretrained_sd15=str(folder)))
    f = 1 if stage == "stage1" else cfg.frames
    small = prepare_batch(synthetic_batch(cfg.batch(stage), f, 64), cfg.mlo_mode, cfg.tau, 64, torch.device("cpu"))
    with FakeTensorMode(allow_non_fake_inputs=True), real_file_reads():
        model = build_model(cfg, stage)
        model.enable_gradient_checkpointing()
        for p in model.unet.attn_processors.values():
            if isinstance(p, ReaderProcessor):
                p.per_clip = per_clip
        counter = FlopCounterMode(display=False)
        with counter:
            T.diffusion_loss(model, model, None, T.make_scheduler(cfg), torch.Generator().manual_seed(0), cfg,
                             torch.device("cpu"), cond=_at_resolution(small, cfg.resolution)).backward()
    return float(counter.get_total_flops())


def format_rows(results: list[dict]) -> list[dict]:
    """Benchmark-table rows (row, value, note) for ``trace_step`` results."""
    rows = []
    for r in results:
        what = "before (landed code)" if r["before"] else "now"
        shape = f"batch {r['batch']}" + (f", {r['frames']} frames" if r["stage"] == "stage2" else "")
        ck = ("checkpointing" if r["checkpointing"] else "no checkpointing") + f", {r['optimizer']} Adam"
        rows.append({
            "row": f"sd15 {r['stage']} memory ({shape}, {r['resolution']}^2, bf16, {ck}; {what})",
            "value": f"peak {r['peak_bytes'] / GB:.1f} GiB",
            "note": (f"traced (CPU): params {r['param_bytes'] / GB:.2f} GiB ({r['trainable_params'] / 1e9:.3f} B "
                     f"trainable fp32 {r['trainable_param_bytes'] / GB:.2f} + {r['frozen_params'] / 1e9:.3f} B "
                     f"frozen {r['frozen_param_bytes'] / GB:.2f}), grads {r['grad_bytes'] / GB:.2f}, "
                     f"Adam {r['optimizer_bytes'] / GB:.2f}, activations {r['activation_bytes'] / GB:.2f}, "
                     f"inputs {r['input_bytes'] / GB:.2f} GiB")})
    return rows
