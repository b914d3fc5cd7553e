"""The base training configuration: every key a config may set, with its default.

A config is a plain, JSON-serialisable dict (it is written into the model's ``config.json`` under
``"training"``). Named configs (``tiny``, ``mobile``, ``large``) and user files start from this one and
override what they need; :func:`rawlab.learn.configs.load_config` rejects keys that are not here.
"""

from __future__ import annotations


def get_config() -> dict:
    return {
        "name": "default",
        # Architecture: a name in rawlab.learn.models.ARCHS, or an explicit "spec" (UNetSpec fields).
        "model": {"arch": "tiny", "spec": None},
        # Network input: "noisemap" (x plus a noise-level map; int8-friendly) or "ksigma" (Wang et al. 2020).
        "normalisation": {"kind": "noisemap"},
        "steps": 2000,
        "seed": 0,
        # The training computation's precision: "auto" (bfloat16 on a GPU or TPU, where it is about twice as
        # fast; float32 on a CPU, where it is not), "float32" or "bfloat16". Parameters stay float32.
        "precision": "auto",
        "data": {
            "crop": 64,  # packed px (2x in mosaic px); a multiple of the model's spec.multiple
            "batch_size": 8,  # global: split over the devices
            "synthetic_fraction": 0.5,  # share of examples with synthetic noise drawn from the noise law
            # Share of examples from unlimited procedural scenes (dead leaves) recorded by a randomly drawn
            # sensor (CFA, levels, bit depth, (a, b)): what lets one model serve sensors it never saw
            # (rawlab.learn.procedural). The rest come from the store as above.
            "procedural_fraction": 0.0,
            # Scenes alive, batches sharing them, scene px; a_range: [lo, hi] of the random sensors' shot-noise
            # term a (log-uniform), or None for rawlab.synth.procedural.A_RANGE (3e-6 to 5e-2).
            "procedural": {"pool": 8, "reuse": 4, "scene_size": 0, "a_range": None},
            "augment": True,  # Bayer-preserving flips and transposes
            "workers": 2,  # prefetch threads
            "prefetch": 4,  # batches prepared ahead
            "cache_mb": 1024,  # decoded-chunk cache
            # Chunk edge (packed px) of a training store derived from the analysis store in WORKDIR/train.zarr
            # (the frames the run reads, rechunked), or 0 to read the analysis store's 256-px chunks directly.
            # Small crops from 256-px chunks decode 64x the pixels they use: see benchmarks/train.py.
            "store_chunk": 0,
            "eval_batches": 4,  # fixed batches of the held-out scenes, scored every eval_every steps
            # Self-supervised (Recorrupted-to-Recorrupted, Pang et al. CVPR 2021): the store's noisy frames
            # alone, no clean reference. Each crop y becomes the input y + alpha z and the target y - z / alpha
            # (z drawn from the noise law at y), whose noises are independent, so an L2 loss (loss.kind "mse")
            # learns the clean signal. For sensors with no clean frames; usually with --init (fine-tuning).
            "self_supervised": False,
            "r2r_alpha": 0.5,
            # How: "r2r" (above), or "sure": the noisy crop as it is, its squared error against the unknown clean
            # signal estimated by Stein's unbiased risk estimate under the noise law (rawlab.learn.losses.sure_mse;
            # a second network pass per step for the divergence), with less variance than a recorrupted target.
            "self_supervised_loss": "r2r",
        },
        # Noise profile (rawlab.noise/1 JSON) giving (a, b) per sensor and ISO; None: fit it from the store
        # (cached in WORKDIR/noise.json) with this many bootstrap resamples. kind: the synthetic noise's model,
        # "poisson_gaussian" (from the profile's (a, b)) or "physics" (drawn from the components of a sensor
        # calibration, `rawlab calibrate`'s calibration.json given as calibration: rawlab.noise.physics); the
        # model's noise map is the profile's (a, b) either way.
        "noise": {"profile": None, "fit_bootstrap": 20, "kind": "poisson_gaussian", "calibration": None},
        "optim": {
            "learning_rate": 1e-3,  # peak of the warmup + cosine schedule (AdamW)
            "warmup_steps": 100,
            "end_lr_fraction": 0.01,  # final learning rate over the peak
            "weight_decay": 1e-4,  # on convolution kernels only
            "clip_norm": 1.0,  # global gradient-norm clipping
            "b1": 0.9,
            "b2": 0.999,
        },
        # (1 - w) * L1 + w * (1 - SSIM), on the normalised signal (data range 1). noise_weighted: each image's
        # L1 divided by its noise sigma (normalised over the batch), so every ISO counts alike. Measured on the
        # demo data (tiny, 300 steps): w = 0.2 and no weighting lose 1-2 dB of held-out PSNR against this.
        # kind "mse": the noise-weighted mean squared error instead (what self-supervised targets need: their
        # noise averages out under L2 only).
        "loss": {"kind": "l1_ssim", "ssim_weight": 0.05, "noise_weighted": True},
        "log_every": 50,
        "eval_every": 500,
        "checkpoint_every": 500,
        "keep_checkpoints": 3,
        # Tile for export and denoising (packed px), recorded in the model's config.json.
        "tile": {"size": 256, "overlap": 32},
    }
