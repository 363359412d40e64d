"""``laueflow report``: every available map of a results store as PNG + one self-contained HTML page."""
from __future__ import annotations

import argparse
import base64
import html
import json
import sys
from pathlib import Path

import numpy as np

from .main import UserError

EXAMPLE = """\
examples:
  laueflow report demo/results.zarr --out demo/report/
  laueflow report demo/results.zarr --out demo/report/ --truth demo/truth.zarr --point 3,4
  laueflow report demo/results.zarr --out demo/report/ --evaluation demo/evaluation.json --frame lab

Writes demo/report/index.html (scan summary, status counts, timings per stage, model hashes, the
evaluation table when --truth or --evaluation is given, every map embedded) and one PNG per map
(IPF X/Y/Z, status, matching rate, peak count, strain components, von Mises, pole figure,
histograms, segmentation maps and scores when the store has them, the detector image of one
point with its indexed spots). Maps that the store cannot give are listed with the reason.
See docs/maps.md.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report", help="maps of a results store as PNG files and one HTML page",
        description="Draw every available map of a results store (PNG) and write a self-contained "
                    "HTML report with the scan summary.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="results store (laueflow run)")
    parser.add_argument("--out", required=True, help="output folder (created; existing files of the same name replaced)")
    parser.add_argument("--truth", help="truth store (laueflow simulate): evaluate and include the table")
    parser.add_argument("--evaluation", help="evaluation JSON (laueflow evaluate --json) to include")
    parser.add_argument("--point", help="scan point Y,X for the image viewer (default: the point with most grains)")
    parser.add_argument("--scan", help="scan store for the detector image (default: the store's scan_store)")
    parser.add_argument("--frame", default="sample", choices=("sample", "lab"),
                        help="frame of IPF directions, pole figure and strain (default: sample)")
    parser.set_defaults(func=run_report)
    return parser


def _figures(ds, frame: str, point, scan):
    """(file stem, title, callable → Figure) for every map this laueflow knows."""
    import laueflow.plot as lp

    figs = [("status", "Status per point", lambda: lp.status_map(ds))]
    for d in ("x", "y", "z"):
        figs.append((f"ipf_{d}", f"IPF-{d.upper()} orientation map", lambda d=d: lp.ipf_map(ds, d, frame=frame)))
    figs += [("matching_rate", "Matching rate", lambda: lp.matching_rate_map(ds)),
             ("peak_count", "Peaks per image", lambda: lp.peak_count_map(ds)),
             ("von_mises", "von Mises strain", lambda: lp.von_mises_map(ds))]
    for comp in lp.STRAIN_COMPONENTS:
        figs.append((f"strain_{comp}", f"Deviatoric strain ε_{comp}",
                     lambda c=comp: lp.strain_map(ds, c, frame=frame)))
    figs.append(("stress", "Deviatoric stress (GPa)", lambda: lp.tensor_maps(ds, quantity="stress", frame=frame)))
    figs += [("pole_figure_100", "{100} pole figure", lambda: lp.pole_figure(ds, (1, 0, 0), frame=frame)),
             ("pole_figure_111", "{111} pole figure", lambda: lp.pole_figure(ds, (1, 1, 1), frame=frame)),
             ("strain_histograms", "Strain histograms", lambda: lp.strain_histograms(ds, frame=frame)),
             ("descriptor_histograms", "Spot descriptors", lambda: lp.descriptor_histograms(ds)),
             ("clusters", "Segmentation: clusters", lambda: lp.cluster_map(ds)),
             ("pca_labeler_rgb", "Segmentation: PCA labeler", lambda: lp.rgb_map(ds, "pca_labeler_rgb")),
             ("direct_rgb", "Segmentation: direct coloring", lambda: lp.rgb_map(ds, "direct_rgb")),
             ("segmentation_scores", "Segmentation: scores", lambda: lp.segmentation_scores(ds)),
             ("phase_groups", "Segmentation: index-free phase groups", lambda: lp.phase_group_map(ds)),
             ("ipf_z_delegates", "Indexing labeler: IPF-Z of the cluster delegates",
              lambda: lp.ipf_map(ds, "z", frame=frame, source="delegates"))]
    if point is not None:
        figs.append(("image", f"Detector image of point {point}",
                     lambda: lp.image_view(ds, *point, scan_store=scan)))
    return figs


def _segmentation_figures(path: Path, ds):
    """Figures of each segmentation group of the store (``laueflow segment``)."""
    import laueflow.plot as lp
    from ..pipeline.results import open_results

    out = []
    for record in ds.attrs.get("segmentations") or []:
        name, group = record.get("name"), record.get("group")
        if not name or not group:
            continue
        seg = open_results(path, group=group)
        stem = "seg_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        out += [(f"{stem}_clusters", f"Segmentation {name}: clusters", lambda s=seg: lp.cluster_map(s)),
                (f"{stem}_pca_labeler_rgb", f"Segmentation {name}: PCA labeler", lambda s=seg: lp.rgb_map(s)),
                (f"{stem}_direct_rgb", f"Segmentation {name}: direct coloring",
                 lambda s=seg: lp.rgb_map(s, "direct_rgb")),
                (f"{stem}_scores", f"Segmentation {name}: scores", lambda s=seg: lp.segmentation_scores(s))]
    return out


def _best_grain_once(ds):
    """``ds`` with the maps' grain already chosen at every point (``laueflow.best_grain``), so that
    the peak tables it reads are read once, not once per map; ``ds`` itself when it cannot be."""
    from ..pipeline.results import ResultsError, best_grain

    if "grain" not in ds.dims:
        return ds
    try:
        return best_grain(ds)
    except ResultsError:
        return ds  # each map then says what it lacks


def default_point(ds):
    """The processed point with the most grains (then the most peaks), or None."""
    for name in ("grain_count", "peak_count"):
        if name in ds:
            values = np.asarray(ds[name].values).astype(float)
            if np.nanmax(values) > 0:
                y, x = np.unravel_index(int(np.nanargmax(values)), values.shape)
                return int(y), int(x)
    return None


def _parse_point(text, ds):
    try:
        y, x = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--point must be Y,X (two integers), got {text!r}") from None
    if not (0 <= y < ds.sizes["y"] and 0 <= x < ds.sizes["x"]):
        raise UserError(f"--point {y},{x} is outside the {ds.sizes['y']}×{ds.sizes['x']} scan")
    return y, x


def _evaluation(args, results_path):
    """The evaluation report as text (`laueflow evaluate`'s format), or None."""
    if args.evaluation:
        report = json.loads(Path(args.evaluation).read_text())
    elif args.truth:
        import xarray as xr

        from ..pipeline.evaluate import check_stores, evaluate

        results, truth = xr.open_zarr(results_path), xr.open_zarr(args.truth)
        try:  # as `laueflow evaluate`: the truth of this scan, or nothing
            unchecked = check_stores(results, truth, results_name=str(results_path), truth_name=f"--truth {args.truth}")
        except ValueError as err:
            raise UserError(str(err)) from None
        if unchecked:
            print(f"laueflow report: warning: {unchecked}", file=sys.stderr)
        report = evaluate(results, truth)
    else:
        return None
    from ..pipeline.evaluate import format_report

    return format_report(report)


def run_report(args) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    from ..pipeline.results import ResultsError, open_results

    path = Path(args.results)
    try:
        ds = open_results(path)
    except ResultsError as err:
        raise UserError(str(err)) from None
    point = _parse_point(args.point, ds) if args.point else default_point(ds)
    if args.evaluation and not Path(args.evaluation).is_file():
        raise UserError(f"--evaluation file not found: {args.evaluation}")
    evaluation = _evaluation(args, path)  # before anything is written: a wrong truth is refused first
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    drawn, skipped = [], []
    maps = _best_grain_once(ds)
    for stem, title, draw in _figures(maps, args.frame, point, args.scan) + _segmentation_figures(path, ds):
        try:
            fig = draw()
        except (ResultsError, KeyError) as err:
            skipped.append((title, str(err).strip("'\"")))
            continue
        file = out / f"{stem}.png"
        fig.savefig(file, bbox_inches="tight", pad_inches=0.1)  # legends outside the axes stay whole
        drawn.append((title, file))
    page = out / "index.html"
    page.write_text(render_html(ds, path, drawn, skipped, evaluation))
    print(page)
    print(f"{len(drawn)} maps, {len(skipped)} not available")
    return 0


def _table(rows, header=None) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header) if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{'<tr>' + head + '</tr>' if head else ''}{body}</table>"


def summary_rows(ds, path) -> list[tuple[str, str]]:
    a = ds.attrs
    rows = [("store", str(path)), ("scan points", f"{ds.sizes['y']} × {ds.sizes['x']} = {ds.sizes['y'] * ds.sizes['x']}"),
            ("step (µm, y x)", str(a.get("step_um"))), ("materials", ", ".join(map(str, ds.coords["material"].values))
                                                        if "material" in ds.coords else "—"),
            ("complete", str(a.get("complete"))), ("started", str(a.get("started"))),
            ("finished", str(a.get("finished"))), ("laueflow version", str(a.get("laueflow_version"))),
            ("scan store", str(a.get("scan_store"))), ("incident-intensity monitor", monitor_use(a))]
    return rows


def monitor_use(attrs) -> str:
    """Whether the scan had a monitor and whether the features were divided by it."""
    digest = (attrs.get("laueflow_provenance") or {}).get("monitor_sha256")
    if not digest:
        return "none (laueflow ingest --monitor records one)"
    stages = (attrs.get("workflow") or {}).get("stages") or []
    features = [next(iter(e.values())) or {} for e in stages if isinstance(e, dict) and next(iter(e)) == "features"]
    features += [{} for e in stages if e == "features"]
    used = "features divided by it" if features and features[0].get("normalize", "auto") != "none" else "not used"
    return f"recorded (sha256 {digest[:12]}…): {used}"


def code_rows(codes, names: dict) -> list:
    """``(code, name, points)`` of every code present in ``codes`` (name ``unknown`` if not in ``names``)."""
    codes = np.asarray(codes)
    return [(c, names.get(c, "unknown"), int((codes == c).sum())) for c in sorted(np.unique(codes).tolist())]


def delegate_status_rows(ds) -> list:
    """:func:`code_rows` of ``delegate_map_status`` (the points of inhomogeneous clusters: left
    unmapped, 3, or mapped from their nearest indexed point, 4)."""
    from laueflow.stages.delegates import DELEGATE_MAP_CODES

    return code_rows(ds["delegate_map_status"].values, DELEGATE_MAP_CODES)


def render_html(ds, path, drawn, skipped, evaluation) -> str:
    """The report page: summary tables, every PNG embedded (base64) and linked."""
    names = {int(k): v for k, v in (ds.attrs.get("status_codes") or {}).items()}
    status_rows = [r for r in code_rows(ds["status"].values, names) if r[0] in names] if "status" in ds else []
    timings = ds.attrs.get("stage_timings_s") or {}
    models = (ds.attrs.get("laueflow_provenance") or {}).get("models") or {}
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>laueflow report</title><style>",
             "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:0.5em 0}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}figure{display:inline-block;margin:0.5em;"
             "vertical-align:top}figure img{max-width:560px;border:1px solid #eee}figure.wide img{max-width:1130px}pre{background:#f6f6f6;padding:0.8em;"
             "overflow-x:auto}", "</style></head><body>",
             f"<h1>laueflow report — {html.escape(path.name)}</h1>", "<h2>Scan</h2>", _table(summary_rows(ds, path)),
             "<h2>Status</h2>", _table(status_rows, ("code", "name", "points"))]
    if "delegate_map_status" in ds:
        parts += ["<h2>Delegate map status</h2>", _table(delegate_status_rows(ds), ("code", "name", "points"))]
    if timings:
        parts += ["<h2>Time per stage (s, summed over tasks and runs)</h2>",
                  _table([(k, f"{float(v):.3f}") for k, v in timings.items()], ("stage", "seconds"))]
    parts += ["<h2>Models</h2>",
              _table([(k, v) for k, v in models.items()], ("stage.parameter", "sha256")) if models
              else "<p>no model files were loaded</p>"]
    if evaluation:
        parts += ["<h2>Evaluation against the truth</h2>", f"<pre>{html.escape(evaluation)}</pre>"]
    parts.append("<h2>Maps</h2>")
    for title, file in drawn:
        raw = file.read_bytes()
        data = base64.b64encode(raw).decode()
        width, height = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")  # PNG IHDR
        wide = " class='wide'" if width > 1.6 * height else ""
        parts.append(f"<figure{wide}><a href='{html.escape(file.name)}'><img alt='{html.escape(title)}' "
                     f"src='data:image/png;base64,{data}'></a><figcaption>{html.escape(title)} "
                     f"(<a href='{html.escape(file.name)}'>{html.escape(file.name)}</a>)</figcaption></figure>")
    if skipped:
        parts += ["<h2>Not available</h2>", _table(skipped, ("map", "why"))]
    parts.append("</body></html>")
    return "\n".join(parts)
