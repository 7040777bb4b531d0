"""Every trainer default in one dataclass, two presets, and how overrides are applied.

Order of precedence (later wins): dataclass defaults -> preset (``tiny`` | ``sd15``) ->
YAML/JSON file given with ``--config`` -> ``key=value`` overrides on the command line.
The file may itself name a preset (``preset: sd15``); it is applied before the file's
other keys. ``validate()`` raises ``ConfigError`` (one line, names the option).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from schemas.config import ConfigError
from schemas.occlusion import DEFAULT_TAU

STAGES = ("stage1", "stage2")
MLO_MODES = ("full", "depth_only", "noise_only")  # full | ablation "no MLO" | "MLO in the noise only"
POSE_GUIDER_MODES = ("latent", "conv_in")         # paper eq. 1 | Animate Anyone
PRECISIONS = ("no", "bf16", "fp16")
LATENTS = ("vae", "pixels")
COND_ATTENTION = ("separate", "shared")
PREDICTIONS = ("epsilon", "v_prediction", "sample")  # sample = x0 (trainer.train.prediction_target)
DEFAULT_STORE = "out/objaverse.zarr"  # what the README demo command (render-objaverse --source builtin) writes


@dataclass
class TrainConfig:
    preset: str = "tiny"
    run_dir: str = "runs/tiny"
    seed: int = 0

    # --- data ---
    stores: list = field(default_factory=lambda: [DEFAULT_STORE])
    mix_objaverse: float = 1.0   # per-step sampling weight of each data source (paper: equal)
    mix_hoi: float = 1.0
    mix_human: float = 1.0
    use_objaverse: bool = True   # ablation "no Objaverse": objaverse stores are not sampled
    resolution: int = 64         # image side the model sees; stores at another size are resized
    frames: int = 4              # stage-2 clip length T (paper: 24)
    num_workers: int = 0         # DataLoader workers (spawned: zarr v3 runs an asyncio loop)
    flip_p: float = 0.5          # horizontal flip (left/right hand layers swapped, normal x negated)
    color_jitter: float = 0.1    # max relative brightness/contrast/saturation change, RGB images only
    ref_dropout: float = 0.1     # drop appearance + geometry references (classifier-free guidance)
    ref_first_frame: bool = False  # add the clip's first frame to the reference images
    tau: float = DEFAULT_TAU     # occlusion-confidence softness (schemas.occlusion)
    split: str = "train"         # which side of the held-out split trains (schemas.split): train | test | all
    test_fraction: float = 0.03  # share of items held out (paper: 3%), by a hash of the item key
    split_by: str = "hash"       # hash | toolkit (the dataset's official split recorded in the store)

    # --- model ---
    pretrained_sd15: str = ""        # local diffusers SD1.5 folder (unet/, vae/); "" = random init
    motion_adapter_path: str = ""    # local MotionAdapter folder; "" = random init (zero-init output)
    block_out_channels: list = field(default_factory=lambda: [32, 64])
    layers_per_block: int = 1
    attention_head_dim: int = 8
    norm_num_groups: int = 8
    cross_attention_dim: int = 32
    latent: str = "pixels"           # vae (SD's AutoencoderKL) | pixels (exact pixel patches; trainer.latents)
    latent_patch: int = 8            # pixels: p x p patches -> 3 p^2 latent channels (64 px -> 8 x 8 x 192)
    vae_block_out_channels: list = field(default_factory=lambda: [8, 16, 16, 16])  # latent=vae without weights
    vae_layers_per_block: int = 1
    vae_scale: float = 2.0           # latent scaling to ~unit variance: SD1.5's VAE 0.18215; pixel patches ~2
    motion_heads: int = 2
    pose_guider_channels: list = field(default_factory=lambda: [16, 32, 64])  # + the zero output conv = 4 convs
    cond_attention: str = "separate"  # E_F and E_N: own cross-attentions (paper eqs. 2, 4) | shared (one softmax)
    pose_guider_mode: str = "latent"
    use_skeleton: bool = False       # G_1: a second pose guider on the skeleton map S of human items (eq. 5)
    mlo_mode: str = "full"
    token_grid: int = 4              # E_F and E_N each give token_grid**2 tokens per frame
    embed_channels: int = 32         # width of the E_F / E_N conv stems and PointNet

    # --- optimisation (paper: stage 1 batch 4, lr 1e-5, ~20k; stage 2 batch 1, 24 frames, 8e-6, ~30k) ---
    stage1_lr: float = 1e-5
    stage1_batch: int = 4
    stage1_steps: int = 20_000
    stage2_lr: float = 8e-6
    stage2_batch: int = 1
    stage2_steps: int = 30_000
    warmup_steps: int = 0
    grad_accum: int = 1
    adam8bit: bool = False           # bitsandbytes Adam8bit
    max_grad_norm: float = 1.0       # 0 = no clipping
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    ema_decay: float = 0.0           # 0 = no EMA
    snr_gamma: float = 0.0           # min-SNR weighting gamma; 0 = plain MSE
    prediction_type: str = "sample"  # tiny: x0 (pixel patches, trainer.train.prediction_target); sd15: epsilon
    zero_terminal_snr: bool = False
    num_train_timesteps: int = 1000
    ddp_find_unused: bool = True     # safe default; the frozen reference-net tail makes False work too

    # --- logging / checkpoints / validation ---
    log_every: int = 10
    ckpt_every: int = 1000           # 0 = only the final checkpoint
    keep_checkpoints: int = 3        # keep the last N step checkpoints (an sd15 one is ~20 GB); 0 = all
    val_clips: int = 2               # test clips sampled at each validation (metrics to metrics.jsonl / tb)
    val_every: int = 1000            # 0 = no validation samples
    sample_steps: int = 25           # DDIM steps for validation and `sample`
    guidance_scale: float = 3.0

    def lr(self, stage: str) -> float:
        return self.stage1_lr if stage == "stage1" else self.stage2_lr

    def batch(self, stage: str) -> int:
        return self.stage1_batch if stage == "stage1" else self.stage2_batch

    def steps(self, stage: str) -> int:
        return self.stage1_steps if stage == "stage1" else self.stage2_steps

    def validate(self) -> TrainConfig:
        def check(cond, msg):
            if not cond:
                raise ConfigError(msg)

        check(self.preset in PRESETS, f"preset must be one of {list(PRESETS)}, got {self.preset!r}")
        check(self.mlo_mode in MLO_MODES, f"mlo_mode must be one of {MLO_MODES}, got {self.mlo_mode!r}")
        check(self.pose_guider_mode in POSE_GUIDER_MODES,
              f"pose_guider_mode must be one of {POSE_GUIDER_MODES}, got {self.pose_guider_mode!r}")
        check(self.mixed_precision in PRECISIONS, f"mixed_precision must be one of {PRECISIONS}")
        check(self.prediction_type in PREDICTIONS, f"prediction_type must be one of {PREDICTIONS}")
        check(isinstance(self.stores, list) and len(self.stores) > 0, "stores must be a non-empty list of paths")
        check(self.latent in LATENTS, f"latent must be one of {LATENTS}, got {self.latent!r}")
        check(self.latent == "vae" or not self.pretrained_sd15, "pretrained_sd15 needs latent=vae (SD's VAE)")
        check(self.cond_attention in COND_ATTENTION,
              f"cond_attention must be one of {COND_ATTENTION}, got {self.cond_attention!r}")
        check(self.latent_patch >= 1 and self.latent_patch & (self.latent_patch - 1) == 0,
              "latent_patch must be a power of 2")
        down = self.latent_patch if self.latent == "pixels" else 2 ** (len(self.vae_block_out_channels) - 1)
        check(self.resolution % (down * 2 ** (len(self.block_out_channels) - 1)) == 0,
              f"resolution {self.resolution} must be divisible by the latent and UNet downsampling")
        check(2 ** len(self.pose_guider_channels) >= down,
              f"pose_guider_channels: {len(self.pose_guider_channels)} strided convs cannot downsample by {down}")
        check(self.frames >= 1 and self.stage1_batch >= 1 and self.stage2_batch >= 1 and self.grad_accum >= 1,
              "frames, batch sizes and grad_accum must be >= 1")
        check(min(self.mix_objaverse, self.mix_hoi, self.mix_human) >= 0, "mix_* weights must be >= 0")
        check(0 <= self.flip_p <= 1 and 0 <= self.ref_dropout <= 1, "flip_p and ref_dropout must be in [0, 1]")
        check(0 <= self.color_jitter < 1, "color_jitter must be in [0, 1)")
        # zero terminal SNR makes alphas_cumprod[T-1] = 0: an epsilon model cannot give x0 there
        check(not self.zero_terminal_snr or self.prediction_type != "epsilon",
              "zero_terminal_snr needs prediction_type=v_prediction or sample (epsilon is undefined at zero SNR)")
        check(self.stage1_lr > 0 and self.stage2_lr > 0, "learning rates must be > 0")
        check(self.log_every >= 1 and self.sample_steps >= 1, "log_every and sample_steps must be >= 1")
        check(min(self.ckpt_every, self.val_every, self.num_workers, self.warmup_steps) >= 0,
              "ckpt_every, val_every (0 = off), num_workers and warmup_steps must be >= 0")
        check(0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)")
        check(self.tau > 0, "tau must be > 0")
        check(self.split in ("train", "test", "all"), f"split must be train, test or all, got {self.split!r}")
        check(0 <= self.test_fraction < 1, "test_fraction must be in [0, 1)")
        check(self.split_by in ("hash", "toolkit"), f"split_by must be hash or toolkit, got {self.split_by!r}")
        check(self.keep_checkpoints >= 0, "keep_checkpoints must be >= 0 (0 = keep every step checkpoint)")
        check(self.token_grid >= 1, "token_grid must be >= 1")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Presets: only the keys that differ from the dataclass defaults (which are the tiny preset).
PRESETS: dict[str, dict] = {
    # Runs a real optimisation step on CPU in ~0.15 s: 64 px images as 8 x 8 pixel patches (trainer.latents).
    "tiny": dict(run_dir="runs/tiny", stage1_batch=2, stage1_steps=200, stage2_steps=100,
                 stage1_lr=3e-3, stage2_lr=1e-3, log_every=10, ckpt_every=100, val_every=100,
                 sample_steps=4,
                 # Measured with benchmarks/learning.py (held-out swap-all loss rise at high t): G added after
                 # conv_in (Animate Anyone) makes the model use the MLO ~1.7x sooner than G added to the
                 # 192-channel noisy pixel patches (eq. 1): +12.5 % vs +7.1 % at 1000 steps, lr 2e-3, one seed;
                 # lr 3e-3 vs 2e-3 at 800 steps: +11.4 % vs +9.5 % (two seeds each). Without a reference path
                 # trained enough to contrast, guidance > 1 only amplifies noise (region PSNR 12.6 / 12.2 /
                 # 11.7 dB at guidance 1 / 2 / 3). The sd15 preset keeps eq. 1, lr 1e-5 and guidance 3.
                 pose_guider_mode="conv_in", guidance_scale=1.0),
    # The paper's size: SD1.5 UNet (random init from this config unless pretrained_sd15 is given).
    "sd15": dict(run_dir="runs/sd15", resolution=512, prediction_type="epsilon", frames=24, num_workers=4,
                 block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, attention_head_dim=8,
                 norm_num_groups=32, cross_attention_dim=768, latent="vae", vae_block_out_channels=[128, 256, 512, 512],
                 vae_layers_per_block=2, vae_scale=0.18215, motion_heads=8, token_grid=16, embed_channels=128,
                 mixed_precision="bf16", gradient_checkpointing=True, log_every=50, ckpt_every=2000,
                 val_every=2000, sample_steps=25),
}


def _coerce(name: str, value):
    """Give a file / command-line value its field's type (YAML reads "1e-5" as a string)."""
    kind = {f.name: f.type for f in dataclasses.fields(TrainConfig)}.get(name)
    if isinstance(value, str) and kind != "str":
        value = yaml.safe_load(value)
    try:
        if kind == "float" and not isinstance(value, bool):
            return float(value)
        if kind == "int" and not isinstance(value, bool):
            return int(value)
        if kind == "bool" and not isinstance(value, bool):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"option {name} expects a {kind}, got {value!r}") from None
    if kind == "str" and value is None:
        return ""
    return value


def load_config(preset: str | None = None, file: str | Path | None = None,
                overrides: list[str] | dict | None = None, base: dict | None = None) -> TrainConfig:
    """Build a validated config: defaults -> preset -> ``base`` (a checkpoint's config, when resuming)
    -> file -> overrides ("key=value" strings or a dict)."""
    from_file: dict = {}
    if file:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"--config {path} does not exist")
        try:
            text = path.read_text()
            from_file = (json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)) or {}
        except (ValueError, yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"--config {path}: cannot parse ({str(e).splitlines()[0][:120]})") from None
        if not isinstance(from_file, dict):
            raise ConfigError(f"--config {path} must hold a mapping of option: value")
    if isinstance(overrides, dict):
        extra = dict(overrides)
    else:
        extra = {}
        for item in overrides or []:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like key=value")
            k, v = item.split("=", 1)
            extra[k.strip()] = v
    base = dict(base or {})
    name = extra.get("preset") or preset or from_file.get("preset") or base.get("preset") or "tiny"
    if name not in PRESETS:
        raise ConfigError(f"preset must be one of {list(PRESETS)}, got {name!r}")
    values = {"preset": name, **PRESETS[name], **base}
    values.update({k: _coerce(k, v) for k, v in from_file.items()})
    values.update({k: _coerce(k, v) for k, v in extra.items()})
    values["preset"] = name
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown config keys: {unknown}")
    if isinstance(values.get("stores"), str):
        values["stores"] = [s for s in values["stores"].split(",") if s]
    try:
        return TrainConfig(**values).validate()
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"bad option value: {str(e).splitlines()[0][:160]}") from None


def config_from_dict(d: dict) -> TrainConfig:
    """Rebuild the exact config stored in a checkpoint."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in d.items() if k in known}).validate()
