"""Make docs/report_example.png: the one-page volume report of a SYNTHETIC phantom volume.

The volume is oct_seg.data.phantom.make_phantom_volume (49 B-scans of 192 x 256 over a
6 x 6 mm field, fovea off-centre, labelled a right eye) and its fluid labels are the
phantom's ground truth, so the page shows the report itself, not a model's accuracy.
No patient or third-party data is involved. Run: python docs/report_example.py
"""
import tempfile
from pathlib import Path

from PIL import Image

from oct_seg.data.phantom import make_phantom_volume
from oct_seg.report import write_volume_report
from oct_seg.volumes import Spacing, Volume

OUT = Path(__file__).with_name("report_example.png")


def main():
    bscans, labels, spacing, _ = make_phantom_volume(0, n_bscans=49, height=192, width=256,
                                                     fovea=(22, 140), n_cysts=8)
    volume = Volume("synthetic_phantom", Path("synthetic_phantom.vol"), list(bscans),
                    Spacing(*spacing, source="synthetic phantom"), laterality="OD",
                    superior_first=True)
    with tempfile.TemporaryDirectory() as tmp:
        write_volume_report(tmp, volume.name, volume, labels, volume.spacing)
        page = Image.open(Path(tmp) / f"{volume.name}_report.png").convert("RGB")
        page.quantize(256, Image.Quantize.FASTOCTREE).save(OUT, optimize=True)  # < 300 KB
    print(f"{OUT} ({OUT.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
