"""KA-Net training loop: data, losses, reweighting, schedule, EMA, validation, logs, checkpoints.

`Trainer(resolve_config(...), read_resumable(...) or None).fit()` is what `kanet train` runs. Exact resumes on CPU rest on
three things: every batch is a pure function of (seed, sample number) (see
`training.data`), the reweighter draws from its own saved generator, and the
global torch RNG state (per-pass RFF redraws, contrastive negatives) is saved
with the model, EMA, optimizer, scheduler and loss-scaler states.
"""
from __future__ import annotations

import csv
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from runtime.devices import gpu_index, parse_device
from runtime.errors import KanetError
from runtime.progress import progress as progress_bar

from . import config as config_io
from .checkpoint import CheckpointError, check_state_dict, load_checkpoint, read_checkpoint, save_checkpoint
from .config import ConfigError, TrainConfig
from .data import TrainingSet, clear_sources, paired_sources, split_sources, validation_samples
from .losses import RECONSTRUCTION, GaussianContrastiveLoss, chroma_per_sample, colour_per_sample, ssim_per_sample
from .models import KANet
from .models.bottleneck import CHANNELS  # width of the bottleneck, hence of z
from .reweighting import SampleReweighter
from .vgg import VGG19Features

log = logging.getLogger(__name__)

LOG_COLUMNS = ("step", "epoch", "lr", "loss", "reconstruction", "contrastive", "weight_min", "weight_max",
               "grad_norm", "sec_per_step", "val_psnr", "val_ssim")
# An epoch is one pass over the training scenes, but at least this many steps: with a handful of
# clear images (haze synthesised afresh each time) a pass is a step or two, far too often to validate.
MIN_EPOCH_STEPS = 500
# Options that may change on --resume without breaking the continuation.
RESUME_FREE = {"steps", "out", "device", "threads", "workers", "val_every", "log_every", "save_every"}


class TrainingError(KanetError, RuntimeError):
    """Training cannot go on (the loss diverged)."""


@dataclass
class TrainResult:
    step: int
    interrupted: bool
    last: Path
    best: Path | None
    best_psnr: float


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay from 1 to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def resolve_config(overrides: Mapping[str, Any], stored: Mapping[str, Any] | None = None) -> TrainConfig:
    """Defaults < a resumed run's `stored` config < `overrides`."""
    if stored is None:
        return config_io.load(overrides)
    changed = _changed_keys(stored, overrides) - RESUME_FREE
    if changed:
        log.warning("resuming with changed %s: training continues, but not as the original run would have",
                    ", ".join(sorted(changed)))
    return config_io.load(config_io.merge(stored, overrides))


def _changed_keys(stored: Mapping[str, Any], update: Mapping[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(stored.get(key), Mapping):
            keys |= _changed_keys(stored[key], value, f"{prefix}{key}.")
        elif config_io.plain(value) != stored.get(key):
            keys.add(f"{prefix}{key}")
    return keys


def read_resumable(path: str | Path) -> dict[str, Any]:
    """A last.pt payload, or CheckpointError saying why the file cannot be resumed from."""
    payload = read_checkpoint(path)
    if payload.get("kind") != "last" or "train_state" not in payload:
        raise CheckpointError(f"{path}: holds deployable weights only, not a training state "
                              "(resume from the run's last.pt; use this file with --init to fine-tune)")
    return payload


def resolve_device(name: str) -> torch.device:
    """The config's device (auto, cpu, N, cuda or cuda:N: runtime.devices, as every command) on this machine."""
    parsed = parse_device(name)
    if parsed == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if parsed != "cpu" and gpu_index(parsed) >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}: PyTorch sees {torch.cuda.device_count()} CUDA GPU(s) on this machine")
    return torch.device(parsed)


def _ignore_sigint(_worker: int) -> None:
    # Ctrl-C reaches the whole process group; the main process alone decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _StopFlag:
    """First Ctrl-C: finish the step, save, stop. Second: stop at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, _signum, _frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("interrupt: saving a checkpoint after this step (Ctrl-C again to abort)")

    def __exit__(self, *_exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class Trainer:
    def __init__(self, config: TrainConfig, resume: Mapping[str, Any] | None = None) -> None:
        """`resume`: a payload from `read_resumable`, whose training state is restored."""
        self.cfg = cfg = config
        self.out = Path(cfg.out)
        self.device = resolve_device(cfg.device)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self._build_data()
        torch.manual_seed(cfg.seed)
        self.model = self._build_model(resume).to(self.device).train()
        self.model.set_rff_redraw(cfg.rff_redraw)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.ema = None
        if cfg.ema:
            # Parameters are averaged; buffers (BatchNorm statistics, the RFF draw) are copied each step:
            # an average of random Fourier draws would not be a draw.
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=False)
            self.ema.module.eval()
        self.optimizer = self._build_optimizer()
        warmup = min(cfg.optim.warmup_steps, cfg.steps // 10)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, cfg.steps, warmup, cfg.optim.min_lr_ratio))
        cuda = self.device.type == "cuda"
        self.amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda and cfg.amp else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.reconstruction = RECONSTRUCTION.get(cfg.loss.reconstruction)
        if self.reconstruction is None:
            raise ConfigError(f"loss.reconstruction must be one of {sorted(RECONSTRUCTION)}, got {cfg.loss.reconstruction!r}")
        self.reweighter = (SampleReweighter(cfg.reweight, CHANNELS, self.device, cfg.seed)
                           if cfg.reweight.enabled else None)
        self.contrastive = self._build_contrastive()
        self.step, self.best_psnr = 0, -math.inf
        if resume is not None:
            self._restore(resume)

    # -- construction ------------------------------------------------------------------------------
    def _build_data(self) -> None:
        cfg, data = self.cfg, self.cfg.data
        if bool(data.clear_dir) == bool(data.paired_dir):
            raise ConfigError("give exactly one of --clear-dir (clear images, haze synthesised) and --paired-dir")
        if cfg.steps < 1 or data.batch_size < 1:
            raise ConfigError(f"steps and batch size must be at least 1, got {cfg.steps} and {data.batch_size}")
        if cfg.reweight.enabled and data.batch_size > cfg.reweight.memory:
            raise ConfigError(f"batch size {data.batch_size} exceeds the reweighting memory ({cfg.reweight.memory} slots)")
        sources = paired_sources(data.paired_dir) if data.paired_dir else clear_sources(data.clear_dir, data.depth_dir)
        self.train_sources, val_sources = split_sources(sources, data.val_fraction, cfg.seed)
        if val_sources is self.train_sources:
            log.warning("no held-out scene (a single scene, or val_fraction 0): validating on the training scenes")
        self.val_samples = validation_samples(val_sources[: data.val_max_images], data.val_size, cfg.seed, cfg.haze)
        self.dataset = TrainingSet(self.train_sources, data.crop_size, cfg.seed, cfg.haze, data.scale_range,
                                   data.hflip, data.vflip)
        self.epoch_steps = max(math.ceil(len(self.train_sources) / data.batch_size), MIN_EPOCH_STEPS)

    def _build_model(self, payload: Mapping[str, Any] | None) -> KANet:
        if payload is not None:
            model = KANet(rff_seed=int(payload["rff_seed"]))
            state = payload["train_state"]["model"] or payload["model"]
            check_state_dict(model, state, "resume checkpoint")
            model.load_state_dict(state)
            for name, buffer in model.rff_buffers().items():
                buffer.copy_(payload["rff"][name])
            return model
        if self.cfg.init:
            return load_checkpoint(self.cfg.init, eval_mode=False)
        return KANet(rff_seed=self.cfg.seed)

    def _build_optimizer(self) -> torch.optim.Optimizer:
        opt = self.cfg.optim
        # Fused kernels: about 3x faster than the foreach path on CPU for 55M parameters.
        if opt.optimizer == "adamw":
            return torch.optim.AdamW(self.params, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay, fused=True)
        if opt.optimizer == "adam":
            return torch.optim.Adam(self.params, lr=opt.lr, betas=opt.betas, fused=True)
        raise ConfigError(f"optim.optimizer must be adamw or adam, got {opt.optimizer!r}")

    def _build_contrastive(self) -> GaussianContrastiveLoss | None:
        loss = self.cfg.loss
        if not loss.contrastive or loss.contrastive_weight == 0:
            return None
        try:
            vgg = VGG19Features(loss.vgg_weights)
            return GaussianContrastiveLoss(vgg, loss.layer_weights, loss.negatives, loss.blur_sigma,
                                           loss.noise_sigma).to(self.device)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"contrastive loss: {exc}") from None

    def _restore(self, payload: Mapping[str, Any]) -> None:
        state = payload["train_state"]
        if self.ema is not None:
            if state["model"] is None:
                raise CheckpointError("resume checkpoint was written without EMA; resume with ema: false")
            self.ema.module.load_state_dict(payload["model"])
            self.ema.n_averaged.copy_(state["ema_n_averaged"])
            self._copy_buffers()
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.reweighter is not None and state["reweighter"] is not None:
            self.reweighter.load_state_dict(state["reweighter"])
        self.step = int(payload["step"])
        self.best_psnr = float(state["best_psnr"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    # -- one step ----------------------------------------------------------------------------------
    def _copy_buffers(self) -> None:
        for ema_buffer, buffer in zip(self.ema.module.buffers(), self.model.buffers()):
            ema_buffer.copy_(buffer)

    def _train_step(self, hazy: Tensor, clear: Tensor) -> dict[str, Tensor]:
        hazy = hazy.to(self.device, non_blocking=True)
        clear = clear.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            output, z = self.model(hazy * 2 - 1)
            contrastive = (self.contrastive(output, clear, hazy).float() if self.contrastive is not None
                           else output.new_zeros((), dtype=torch.float32))
        output = output.float()
        weights = self.reweighter(z) if self.reweighter is not None else torch.ones(output.shape[0], device=self.device)
        per_sample = self.reconstruction(output, clear)
        if self.cfg.loss.ssim_weight:
            per_sample = per_sample + self.cfg.loss.ssim_weight * (1 - ssim_per_sample(output, clear))
        if self.cfg.loss.colour_weight:
            per_sample = per_sample + self.cfg.loss.colour_weight * colour_per_sample(output, clear)
        if self.cfg.loss.chroma_weight:
            per_sample = per_sample + self.cfg.loss.chroma_weight * chroma_per_sample(output, clear)
        reconstruction = (weights * per_sample).mean()
        loss = reconstruction + self.cfg.loss.contrastive_weight * contrastive
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
            self._copy_buffers()
        return {"loss": loss.detach(), "reconstruction": reconstruction.detach(), "contrastive": contrastive.detach(),
                "weight_min": weights.min(), "weight_max": weights.max(), "grad_norm": grad_norm.detach(),
                "lr": torch.tensor(lr)}

    # -- validation, logs, checkpoints -------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        """Mean PSNR and SSIM (skimage, data range 1) of the deployed weights on the validation crops."""
        net = self.ema.module if self.ema is not None else self.model
        was_training = net.training
        net.eval()
        psnrs, ssims = [], []
        for hazy, clear in self.val_samples:
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
                output, _ = net(hazy[None].to(self.device) * 2 - 1)
            pred = output[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy().astype(np.float64)
            target = clear.permute(1, 2, 0).numpy().astype(np.float64)
            psnrs.append(peak_signal_noise_ratio(target, pred, data_range=1.0))
            ssims.append(structural_similarity(target, pred, channel_axis=2, data_range=1.0))
        net.train(was_training)
        return float(np.mean(psnrs)), float(np.mean(ssims))

    def _deployed(self) -> KANet:
        return self.ema.module if self.ema is not None else self.model

    def save_last(self) -> Path:
        state = {
            "model": self.model.state_dict() if self.ema is not None else None,  # raw weights; `model` holds the EMA
            "ema_n_averaged": self.ema.n_averaged.cpu() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "reweighter": self.reweighter.state_dict() if self.reweighter is not None else None,
            "best_psnr": self.best_psnr,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []},
        }
        return save_checkpoint(self._deployed(), self.out / "last.pt", kind="last", step=self.step,
                               config=self.cfg.to_dict(), train_state=state)

    def save_best(self, psnr: float, ssim: float) -> Path:
        return save_checkpoint(self._deployed(), self.out / "best.pt", kind="best", step=self.step,
                               config=self.cfg.to_dict(), val_psnr=psnr, val_ssim=ssim)

    def _open_log(self) -> tuple[Any, csv.writer]:
        path = self.out / "log.csv"
        rows = []
        if self.step > 0 and path.is_file():  # keep what the resumed run had logged up to its checkpoint
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= self.step]
        handle = path.open("w", newline="")
        writer = csv.writer(handle)
        writer.writerow(LOG_COLUMNS)
        writer.writerows([[r.get(c, "") for c in LOG_COLUMNS] for r in rows])
        return handle, writer

    # -- the loop ----------------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        batch = self.cfg.data.batch_size
        return DataLoader(self.dataset, batch_size=batch, sampler=range(self.step * batch, self.cfg.steps * batch),
                          num_workers=self.cfg.data.workers, pin_memory=self.device.type == "cuda",
                          worker_init_fn=_ignore_sigint if self.cfg.data.workers else None,
                          generator=torch.Generator().manual_seed(self.cfg.seed))  # leaves the global RNG alone

    def fit(self, progress: bool | None = None) -> TrainResult:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        val_every = cfg.val_every or self.epoch_steps
        best = self.out / "best.pt" if (self.out / "best.pt").is_file() else None
        handle, writer = self._open_log()
        log.info("%d training scene(s), %d validation crop(s), %d step(s) per epoch; device %s%s; contrastive loss %s; "
                 "reweighting %s; step %d of %d", len(self.train_sources), len(self.val_samples), self.epoch_steps,
                 self.device, f" ({self.amp_dtype})" if self.amp_dtype else "",
                 "off" if self.contrastive is None else "on" if self.contrastive.vgg.pretrained else "on (random VGG)",
                 "on" if self.reweighter else "off", self.step, cfg.steps)
        window: dict[str, Tensor] = {}
        window_steps, window_start = 0, time.perf_counter()
        with _StopFlag() as stop, handle, progress_bar(cfg.steps, progress, "train", "step",
                                                       self.step) as bar:
            config_io.write(cfg, self.out / "config.yaml")
            for hazy, clear in self._loader():
                values = self._train_step(hazy, clear)
                self.step += 1
                window = {k: window.get(k, 0) + v for k, v in values.items()}
                window_steps += 1
                bar.update(1)
                validate = self.step % val_every == 0 or self.step == cfg.steps
                if self.step % cfg.log_every == 0 or validate or stop.requested:
                    row = {k: float(v) / window_steps for k, v in window.items()}
                    if not math.isfinite(row["loss"]):
                        raise TrainingError(f"the loss is not finite by step {self.step} (last good checkpoint: "
                                            f"{self.out / 'last.pt'}); lower the learning rate or turn AMP off")
                    row.update(step=self.step, epoch=(self.step - 1) // self.epoch_steps + 1,
                               sec_per_step=(time.perf_counter() - window_start) / window_steps)
                    if validate:
                        row["val_psnr"], row["val_ssim"] = self.validate()
                        if row["val_psnr"] > self.best_psnr:
                            self.best_psnr = row["val_psnr"]
                            best = self.save_best(row["val_psnr"], row["val_ssim"])
                    writer.writerow([_fmt(row.get(c)) for c in LOG_COLUMNS])
                    handle.flush()
                    bar.set_postfix(loss=f"{row['loss']:.4f}", **({"psnr": f"{row['val_psnr']:.2f}"} if validate else {}))
                    window, window_steps, window_start = {}, 0, time.perf_counter()
                save_due = self.step % cfg.save_every == 0 if cfg.save_every else validate
                if save_due or stop.requested or self.step == cfg.steps:
                    self.save_last()
                if stop.requested:
                    break
            if not (self.out / "last.pt").is_file():
                self.save_last()  # resumed at the very end into a new folder: nothing ran
        return TrainResult(self.step, stop.requested, self.out / "last.pt", best, self.best_psnr)


def _fmt(value: Any) -> Any:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else value

