"""Per-volume fluid report: en-face map, ETDRS table and the one-page report, written to files.

For a raster volume NAME (more than one B-scan), :func:`write_volume_report` writes into a
folder (`oct-seg predict`: OUT/reports/):

    NAME_report.png | .pdf   the page to look at first: header (file, eye, spacing, fovea and
                             how it was found, B-scan order), the B-scan through the fovea with
                             its fluid outlined, the en-face map with the ETDRS grid, and the
                             sector table (partial sectors starred)
    NAME_enface.png          the en-face fluid height map alone (fundus view, true aspect ratio,
                             colour bar in mm, or pixels without axial spacing)
    NAME_fluid_height.tif    uint16 (n_bscans, n_ascans): fluid pixels per A-scan, row k =
                             B-scan k (file order, not flipped), column = A-scan; x axial
                             spacing = mm. ImageJ calibration (mm) when the spacing is known
    NAME_etdrs.csv           oct_seg.etdrs table, each row preceded by volume, eye, eye_source,
                             fovea_bscan, fovea_column, fovea_method, orientation

Drawing uses matplotlib Figures (no pyplot state); files are written atomically (oct_seg.io).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from oct_seg._version import __version__
from oct_seg.enface import EnfaceGrid, fluid_height
from oct_seg.etdrs import RADII_MM, etdrs_table, sector_of
from oct_seg.fovea import Fovea, find_fovea
from oct_seg.io import atomic_write, write_csv
from oct_seg.names import EYES, REPORT_FORMATS
from oct_seg.plots import plot_overlay, save_figure
from oct_seg.volumes import Spacing, Volume

PAGE_INCHES = (8.27, 11.69)  # A4 portrait
PAGE_DPI = 100               # ~830 x 1170 px: readable on screen, small enough to mail
_CMAP = "viridis"            # perceptually uniform, readable in grey and by colour-blind readers


def check_report_options(eye=None, fmt="png"):
    """ValueError unless eye is None / "OD" / "OS" and fmt is "png" / "pdf"."""
    if eye is not None and eye not in EYES:
        raise ValueError(f"eye must be one of {', '.join(EYES)}, got {eye!r}")
    if fmt not in REPORT_FORMATS:
        raise ValueError(f"report format must be one of {', '.join(REPORT_FORMATS)}, "
                         f"got {fmt!r}")


def resolve_eye(file_eye, given=None) -> tuple[str | None, str]:
    """(laterality, where it came from): a given eye ("OD" / "OS") wins over the file's."""
    check_report_options(eye=given)
    if given is None:
        return file_eye, "from the file" if file_eye else "not in the file; give --eye OD|OS"
    if file_eye and file_eye != given:
        return given, f"given (--eye; the file says {file_eye})"
    return given, "given (--eye)"


def write_volume_report(out_dir, name: str, volume: Volume, labels, spacing: Spacing,
                        fovea: Fovea | None = None, eye=None, fmt="png"):
    """Write the four files of the module docstring for one raster volume; return the ETDRS
    table (pandas DataFrame) as written to NAME_etdrs.csv.

    labels: the volume's label maps, n x (H, W) (fluid = label > 0); spacing: its geometry
    (e.g. with --spacing applied); fovea: None to find it (oct_seg.fovea.find_fovea); eye:
    "OD" / "OS" to override the file's laterality; fmt: "png" or "pdf" for the page.
    """
    import tifffile

    check_report_options(eye, fmt)
    out_dir = Path(out_dir)
    height = fluid_height(labels)
    if height.shape[0] < 2:
        raise ValueError(f"{volume.path}: a volume report needs more than one B-scan")
    fovea = find_fovea(volume.bscans) if fovea is None else fovea
    grid = EnfaceGrid.of(height.shape, (fovea.bscan, fovea.column), spacing,
                         volume.superior_first)
    laterality, eye_source = resolve_eye(volume.laterality, eye)
    table = etdrs_table(height, grid, spacing, laterality)
    context = dict(volume=name, eye=laterality or "", eye_source=eye_source,
                   fovea_bscan=fovea.bscan, fovea_column=fovea.column,
                   fovea_method=fovea.method, orientation=grid.orientation)
    for k, (column, value) in enumerate(context.items()):
        table.insert(k, column, value)
    write_csv(out_dir / f"{name}_etdrs.csv", table)

    tiff = {}
    if grid.unit == "mm":
        tiff = dict(resolution=(1 / spacing.lateral_mm, 1 / spacing.bscan_mm),
                    metadata={"unit": "mm"})
    atomic_write(out_dir / f"{name}_fluid_height.tif", lambda tmp: tifffile.imwrite(
        tmp, height.astype(np.uint16), imagej=True, **tiff))

    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    draw_enface(fig.add_subplot(), height, grid, spacing, laterality)
    save_figure(fig, out_dir / f"{name}_enface.png", dpi=PAGE_DPI)

    page = report_page(name, volume, labels[fovea.bscan], height, grid, spacing,
                       (laterality, eye_source), fovea, table)
    save_figure(page, out_dir / f"{name}_report.{fmt}", format=fmt, dpi=PAGE_DPI)
    return table


def draw_enface(ax, height, grid: EnfaceGrid, spacing: Spacing, laterality=None):
    """En-face fluid height map on `ax` in fundus view, fovea at (0, 0): the scanned area in
    light grey, fluid coloured by height (mm, or pixels without axial spacing) with a colour
    bar, the ETDRS circles, diagonals and sector codes (grid in mm only), the fovea (+) and
    its B-scan (dashed)."""
    axial = spacing.known("axial")
    values = np.ma.masked_equal(height * (axial or 1.0), 0)
    left, right, bottom, top = grid.extent()
    ax.add_patch(_rectangle(left, bottom, right - left, top - bottom))
    image = ax.imshow(values, cmap=_CMAP, extent=(left, right, bottom, top), origin=grid.origin,
                      vmin=0, interpolation="nearest", zorder=2)
    ax.figure.colorbar(image, ax=ax, location="bottom", shrink=0.8, pad=0.02,
                       label="fluid height (mm)" if axial else "fluid height (pixels)")
    ax.axhline(0, color="white", lw=0.8, ls="--", zorder=3)
    ax.plot([0], [0], "+", color="red", ms=12, mew=1.5, zorder=4)
    if grid.unit == "mm":
        _draw_grid(ax, laterality)
        reach = RADII_MM[-1] + 0.2
        ax.set_xlim(min(left, -reach), max(right, reach))
        ax.set_ylim(min(bottom, -reach), max(top, reach))
    ax.set_aspect("equal" if grid.unit == "mm" else "auto")  # true aspect needs the spacing
    right_side = {"OD": "nasal", "OS": "temporal"}.get(laterality, "eye unknown")
    unit = "mm" if grid.unit == "mm" else "A-scans"
    ax.set_ylabel(f"{'mm' if grid.unit == 'mm' else 'B-scans'}; up = superior")
    ax.set_title(f"En-face fluid height ({unit}; right = {right_side})", fontsize="medium")


def _rectangle(x, y, w, h):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, facecolor="0.85", edgecolor="0.4", lw=0.8, zorder=1)


def _draw_grid(ax, laterality):
    """ETDRS circles, the diagonals of the rings and the sector codes, centred on (0, 0)."""
    from matplotlib.patches import Circle

    for radius in RADII_MM:
        ax.add_patch(Circle((0, 0), radius, fill=False, color="black", lw=0.9, zorder=3))
    for angle in np.deg2rad([45, 135, 225, 315]):
        ax.plot(np.array(RADII_MM[::2]) * np.cos(angle), np.array(RADII_MM[::2]) * np.sin(angle),
                color="black", lw=0.9, zorder=3)
    label_r = (1.0, 2.25)  # mid-radius of the inner and outer ring
    for radius in label_r:
        for angle in np.deg2rad([90, 0, 270, 180]):
            x, y = radius * np.cos(angle), radius * np.sin(angle)
            ax.text(x, y, sector_of(x, y, laterality).item(), ha="center", va="center",
                    fontsize="small", color="black", zorder=5,
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.6))


def report_page(name, volume: Volume, label, height, grid, spacing, eye, fovea: Fovea,
                table) -> Figure:
    """The one-page report as a Figure (A4 portrait); eye: (laterality, source)."""
    fig = Figure(figsize=PAGE_INCHES, layout="constrained")
    rows = fig.add_gridspec(3, 2, height_ratios=(0.85, 1.6, 3.2), width_ratios=(1.2, 1))
    head = fig.add_subplot(rows[0, :])
    head.set_axis_off()
    n, w = height.shape
    scale = ", ".join(f"{axis} {spacing.known(axis):.4g} mm" if spacing.known(axis) else
                      f"{axis} unknown" for axis in ("lateral", "axial", "bscan"))
    lines = [f"file: {volume.path.name} ({n} B-scans x {w} A-scans)",
             f"spacing: {scale} ({spacing.source or 'none'})",
             f"eye: {eye[0] or 'unknown'} ({eye[1]});  {grid.orientation}",
             f"fovea: B-scan {fovea.bscan}, A-scan {fovea.column}: {fovea.method}",
             f"automatic segmentation by oct_seg {__version__}, not reviewed: check the fluid "
             "outlines before use"]
    head.text(0, 1, f"Fluid report: {name}", fontsize="x-large", weight="bold", va="top")
    head.text(0, 0.75, "\n".join(lines), fontsize="small", va="top", linespacing=1.5)

    scan = fig.add_subplot(rows[1, :])
    plot_overlay(volume.bscans[fovea.bscan], pred=np.asarray(label) > 0, ax=scan,
                 title=f"B-scan {fovea.bscan} through the fovea (fluid outlined in red; "
                       f"dotted: fovea A-scan)")
    scan.axvline(fovea.column, color="yellow", ls=":", lw=1)
    scan.set_aspect("auto")

    draw_enface(fig.add_subplot(rows[2, 0]), height, grid, spacing, eye[0])
    _draw_table(fig.add_subplot(rows[2, 1]), table, grid.unit == "mm")
    return fig


def _draw_table(ax, table, placed: bool):
    """Sector table: region, fluid area, fluid volume (or voxels), share outside the scan."""
    ax.set_axis_off()
    mm3 = table["volume_mm3"].notna().all()
    header = ["region", "area mm²" if placed else "fluid A-scans",
              "volume mm³" if mm3 else "fluid voxels", "outside"]
    cells = []
    for row in table.itertuples():
        area = f"{row.area_mm2:.3f}" if placed else f"{row.fluid_ascans}"
        volume = f"{row.volume_mm3:.4f}" if mm3 else f"{row.fluid_voxels}"
        star = " *" if row.partial else ""
        cells.append([row.region + star, area, volume, f"{100 * row.outside_fraction:.0f} %"])
    drawn = ax.table(cellText=cells, colLabels=header, loc="upper center", cellLoc="right",
                     colLoc="right", colWidths=(0.25, 0.28, 0.27, 0.2))
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(8)
    drawn.scale(1, 1.4)
    note = ("* partly outside the scan: the value covers only the scanned part" if placed else
            "ETDRS grid not placed: it needs the lateral and B-scan spacing (--spacing)")
    ax.text(0.5, 0.02, note, ha="center", fontsize="x-small", wrap=True,
            transform=ax.transAxes)
    ax.set_title("ETDRS sectors", fontsize="medium")
