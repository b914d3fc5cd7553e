"""Bursts: ``burst merge`` (align and merge several raw frames of one scene into one DNG)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace

import click

from ..errors import RawlabError
from ._common import _cluster_options, _Group, _reporting, main


@main.group(cls=_Group)
def burst():
    """Align and merge bursts of raw frames (HDR+-style, on the Bayer mosaic)."""


@dataclass(frozen=True)
class FrameNoise:
    """The noise law of a burst's reference frame, by `rawlab denoise`'s rule
    (:func:`rawlab.deploy.noiseparams.noise_for_frame`): the ``--noise`` profiles for the file's sensor and
    ISO, else its DNG NoiseProfile, else a single-image estimate. Pickles, so Dask workers run it."""

    profiles: dict | None = None

    @property
    def config(self) -> dict:  # what noise_for_frame reads a model's law from
        return {"noise": self.profiles} if self.profiles else {}

    def __call__(self, info, planes):
        from ..deploy.noiseparams import noise_for_frame

        est = noise_for_frame(self, info, planes)
        if est.source == "model law":
            return replace(est, source="--noise profile")
        detail = est.detail.replace("the model has no noise law", "no --noise profile")
        return replace(
            est, detail=detail.replace("the model's noise law does not know", "the --noise profile lacks")
        )


def _bursts(sources: list[str]) -> list[tuple[list[str], str]]:
    """Folder mode: each folder holding raw files is a burst (its frames in name order), named by its path
    below the folder given (the folder's own name when the frames lie directly in it; with several folders
    given, each name starts with its folder's)."""
    import posixpath

    from ..catalog.scan import scan_sources

    found = []
    for src in sources:
        groups: dict[str, list[str]] = {}
        for f in scan_sources([src]).files:
            groups.setdefault(posixpath.dirname(f.relpath), []).append(f.path)
        base = os.path.basename(os.path.normpath(src))
        for rel, paths in sorted(groups.items()):
            name = rel or base
            if len(sources) > 1 and rel:
                name = posixpath.join(base, rel)
            found.append((sorted(paths), name))
    return found


@burst.command("merge")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--out",
    required=True,
    type=click.Path(),
    help="The merged DNG (frames given), or a folder (folders given: one DNG per burst, OUT/<burst>.dng).",
)
@click.option(
    "--reference",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Index of the frame the others are aligned and merged to: in the order given, or in name order within "
    "a burst folder.",
)
@click.option(
    "--noise",
    "noise_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="A noise profile (rawlab.noise/1, from `rawlab noise-fit`) used for sensors it knows; otherwise the "
    "reference's DNG NoiseProfile, else an estimate from the image alone (its read noise from the sensor's "
    "masked border where the file keeps one).",
)
@click.option(
    "--robustness",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="c of the merge's weight e / (e + c), e what the noise does not explain of a frame's difference from "
    "the reference (default 3): larger merges more and rejects motion less.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (otherwise they are kept).")
@_cluster_options("Address of a running Dask scheduler for folders of bursts (instead of a local cluster).")
@click.option("--strict", is_flag=True, help="Exit 1 if any burst failed (folder mode).")
def merge(sources, out, reference, noise_path, robustness, overwrite, scheduler, workers, strict):
    """Merge a burst of raw frames of one scene (SOURCES: its files) into one Bayer DNG, or every burst under
    SOURCES (folders: each folder of raw files is a burst) into OUT/<burst>.dng, through Dask.

    Frames are aligned to the reference tile by tile, coarse to fine on the mosaic (HDR+), and merged per
    Bayer plane by the pairwise frequency-domain Wiener merge driven by the noise law, so moving content
    keeps the reference's pixels instead of ghosting. The DNG keeps the reference's size, CFA, levels and
    metadata; its NoiseProfile is the law scaled by the merged noise variance.

    \b
      rawlab burst merge burst/*.dng --out merged.dng
      rawlab burst merge data/SynthCam_PG-1/ --out merged/     # every burst folder below
    """
    from ..burst.files import merge_bursts, merge_files
    from ..burst.merge import ROBUSTNESS
    from ..cluster import RunOptions

    t0 = time.perf_counter()
    robustness = ROBUSTNESS if robustness is None else robustness
    profiles = None
    if noise_path is not None:
        from ..noise.profile import load_profiles

        profiles = load_profiles(noise_path).to_dict()
    noise = FrameNoise(profiles)
    dirs = [os.path.isdir(s) for s in sources]
    if all(dirs):
        from ..outputs import output_folder

        found = _bursts(list(sources))
        if not found:
            raise RawlabError(f"no raw files found in {', '.join(sources)}; pass burst folders or the frames")
        outdir = output_folder(out)
        outs = [os.path.join(outdir, f"{name}.dng") for _, name in found]
        with _reporting("burst merge", len(found)) as report:
            results = merge_bursts(
                [p for p, _ in found], outs, noise=noise, reference=reference, overwrite=overwrite,
                robustness=robustness,
                options=RunOptions(scheduler=scheduler, workers=workers, **report),
            )  # fmt: skip
        for r in results:
            click.echo(r.line(), err=not r.ok and r.error is not None)
        n_ok = sum(r.ok for r in results)
        n_failed = sum(r.error is not None for r in results)
        click.echo(
            f"burst merge: {n_ok} of {len(results)} bursts merged to {outdir}, {n_failed} failed, "
            f"{len(results) - n_ok - n_failed} skipped (output exists) ({time.perf_counter() - t0:.1f} s)"
        )
        if n_failed and (strict or n_failed == len(results)):
            raise SystemExit(1)
        return
    if any(dirs):
        raise RawlabError("give either the frames of one burst (files) or folders of bursts, not both")
    from ..outputs import output_file

    target = output_file(out)
    if os.path.lexists(target) and not overwrite:
        raise RawlabError(f"--out {target} exists; pass --overwrite to replace it, or choose another --out")
    paths = list(sources)
    with _reporting("burst merge", 1) as report:
        result = merge_files(
            paths, target, noise=noise, reference=reference, overwrite=overwrite, robustness=robustness
        )
        report["progress"](1)
    if result.error is not None:
        raise RawlabError(result.error)
    if result.skipped is not None:
        raise RawlabError(result.skipped)
    click.echo(result.line())


@burst.command("train")
@click.option("--workdir", required=True, type=click.Path(file_okay=False),
              help="Run directory (model, checkpoints, metrics); training resumes from its last checkpoint.")  # fmt: skip
@click.option("--config", "config_name", default="burst", show_default=True,
              help="'burst', or a Python file with get_config() and a burst block.")  # fmt: skip
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Total steps (overrides the config).")
@click.option("--frames", type=click.IntRange(min=2), default=None,
              help="K, the frames the model takes (shorter bursts repeat their reference).")  # fmt: skip
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=None, help="Batch size (overrides the config)."
)
@click.option("--stop-after", type=click.IntRange(min=1), default=None,
              help="Stop at this step, keeping the schedule of --steps (resume later to go on).")  # fmt: skip
def burst_train(workdir, config_name, steps, frames, batch_size, stop_after):
    """Train the burst model: a U-Net over K aligned frames as channels with their noise maps, out the clean
    reference, on bursts simulated on the fly (procedural scenes, random sensors, hand shake, a moving object);
    no store needed. The same loop, checkpoints and resume as `rawlab train`; `rawlab denoise --burst` and
    `rawlab export` take the WORKDIR.
    """
    from ..learn.bursttrain import load_burst_config, train_burst

    cfg = load_burst_config(config_name, steps=steps, burst__frames=frames, data__batch_size=batch_size)
    result = train_burst(cfg, workdir, stop_after=stop_after, echo=lambda m: click.echo(m, err=True))
    click.echo(result.line())
