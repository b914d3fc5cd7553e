"""Characterise and analyse: ``noise-fit``, ``calibrate`` and ``stats``."""

from __future__ import annotations

import sys
import time

import click

from ._common import _cluster_options, _reporting, main


@main.command("noise-fit")
@click.argument("store")
@click.option("--sensor", required=True, help="Sensor name as in `rawlab catalog show`, or 'all'.")
@click.option(
    "--method",
    type=click.Choice(["auto", "paired", "single"]),
    default="auto",
    show_default=True,
    help="paired: noisy frames against clean references; single: each frame alone (the green quincunx, "
    "texture-robust; R and B carried over by span); auto: pairs where the sensor has them.",
)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Profile file to write.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["rawlab", "darktable", "dng", "android"]),
    default="rawlab",
    show_default=True,
    help="rawlab JSON; a darktable noiseprofiles.json; DNG NoiseProfile values; or the Android camera noise "
    "model (S = A*sens + B, O = C*sens^2 + D*digital_gain^2, with the CTS check and C functions).",
)
@click.option(
    "--bootstrap",
    type=click.IntRange(0, 10000),
    default=200,
    show_default=True,
    help="Bootstrap resamples over frames for the standard errors.",
)
@_cluster_options()
def noise_fit(store, sensor, method, out, fmt, bootstrap, scheduler, workers):
    """Fit Poisson-Gaussian noise, Var[x] = a*x + b (normalised units), per sensor, ISO and channel.

    Then fits the law over ISO (a proportional to ISO; b = b0 + b1*ISO^2, with gain steps detected), validates
    the fit on held-out tiles, and writes the profile with plots beside it (<out>_<sensor>_variance.png,
    <out>_<sensor>_isolaw.png).
    """
    from ..cluster import RunOptions
    from ..noise.pipeline import fit_store
    from ..noise.report import write_outputs
    from ..outputs import output_file

    output_file(out)  # before the fit, not after it
    with _reporting("noise moments") as report:
        result = fit_store(
            store,
            sensor=sensor,
            method=method,
            bootstrap=bootstrap,
            options=RunOptions(scheduler=scheduler, workers=workers, **report),
        )
    written = write_outputs(result, out, fmt)
    for line in written.lines:
        click.echo(line)
    click.echo(written.summary)


@main.command("calibrate")
@click.argument("sources", nargs=-1)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option(
    "--sensor", default=None, help="Calibrate only this sensor (as `rawlab catalog show` names it)."
)
@click.option(
    "--darks", multiple=True, help="Frames that are darks (a recipe; repeatable): folder, file or glob."
)
@click.option("--flats", multiple=True, help="Frames that are flat fields (a recipe; repeatable).")
@click.option(
    "--dark-max",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.02,
    show_default=True,
    help="SOURCES are told apart by level: a frame at most this fraction of the range above black is a dark.",
)
@click.option("--strict", is_flag=True, help="Exit 1 if any frame was rejected.")
@_cluster_options()
def calibrate(sources, out, sensor, darks, flats, dark_max, strict, scheduler, workers):
    """Calibrate sensors from dark frames and flat fields: EMVA 1288 figures per ISO and CFA channel.

    SOURCES (folders, files, globs) hold darks and flats, told apart by level; --darks and --flats name them
    instead. Writes OUT/calibration.json (rawlab.calibration/1: read noise, Tukey-lambda shape, row noise, DSNU,
    PRNU, dark current, system gain K, saturation, linearity error, each with its standard error),
    OUT/figures.json, OUT/report.html and OUT/emva1288/ descriptors. Frames that are neither dark nor flat
    are reported with the reason and left out.
    """
    from ..calibrate import calibrate as run
    from ..calibrate.report import write_calibration
    from ..cluster import RunOptions
    from ..outputs import output_folder

    t0 = time.perf_counter()
    output_folder(out)
    with _reporting("calibrate") as report:
        result = run(sources, darks=darks, flats=flats, sensor=sensor, dark_max=dark_max,
                     options=RunOptions(scheduler=scheduler, workers=workers, **report))  # fmt: skip
    files = write_calibration(result, out)
    for r in result.rejected:
        click.echo(f"rejected: {r['path']}: {r['reason']}", err=True)
    for s in result.doc["sensors"]:
        click.echo(f"{s['sensor']}:")
        click.echo(
            f"  {'ISO':>6} {'K (G1)':>9} {'read':>7} {'row':>6} {'DSNU':>6} {'PRNU%':>6} {'DC/s':>7} {'lambda':>7}"
        )
        for i in s["isos"]:
            f = {k: v["value"][1] for k, v in i["figures"].items()}
            cells = [f["system_gain_dn_per_e"], f["read_noise_dn"], f["row_noise_dn"], f["dsnu_dn"],
                     f["prnu_percent"], f["dark_current_dn_per_s"], f["tukey_lambda"]]  # fmt: skip
            click.echo(
                f"  {i['iso']:>6} " + " ".join(f"{'-' if v is None else format(v, '.4g'):>7}" for v in cells)
            )
    click.echo(
        f"calibrate: {len(result.doc['sensors'])} sensors, {sum(len(s['isos']) for s in result.doc['sensors'])} "
        f"ISOs, {len(result.rejected)} frames rejected -> {files[0]}, {files[2]} ({time.perf_counter() - t0:.1f} s)"
    )
    if strict and result.rejected:
        sys.exit(1)


@main.command("stats")
@click.argument("store")
@click.option(
    "--out", "out", required=True, type=click.Path(file_okay=False), help="Folder for the tables and report."
)
@click.option(
    "--profile",
    type=click.Path(dir_okay=False),
    default=None,
    help="Noise profile to use (rawlab JSON from `rawlab noise-fit`); sensors it lacks are fitted here.",
)
@click.option(
    "--anchors",
    type=click.Path(dir_okay=False),
    default=None,
    help="External profiles to compare with: a darktable noiseprofiles.json or a rawlab JSON.",
)
@_cluster_options()
def stats(store, out, profile, anchors, scheduler, workers):
    """Cross-device statistics of STORE: sensors.csv, report.html and plots in OUT.

    One row per sensor and ISO: noise a and b (from --profile, else fitted), SNR at 18% grey
    (20*log10(x/sigma), dB), read-noise-limited dynamic range (log2(1/sqrt(b)), stops), gain and read noise in
    electrons, frame counts, exposure, saturation and QA. Sensors are ranked at the same ISO and signal level;
    --anchors adds published profiles to compare the shape of the ISO laws with.
    """
    from ..cluster import RunOptions
    from ..outputs import output_folder
    from ..stats import compute_stats, write_outputs

    output_folder(out)  # before the passes over the store, not after them
    with _reporting("stats") as report:
        result = compute_stats(
            store,
            profile=profile,
            anchors=anchors,
            options=RunOptions(scheduler=scheduler, workers=workers, **report),
        )
    written = write_outputs(result, out)
    for line in [*result.notes, *written.lines]:
        click.echo(line)
    click.echo(written.summary)
