"""The clinic job with the shipped preset: one OCT volume file -> fluid masks, overlays, CSVs.

One command, from the repository root:

    .venv/bin/python bench/clinic.py

writes a 61-B-scan 496 x 768 volume built from the Duke DME B-scans (cycled) twice, as a
uint8 multi-page TIFF and as a Heidelberg .vol (float32 reflectivity = (grey / 255)^4, the
inverse of the reader's 4th root; spacing 0.0116 x 0.0039 x 0.12 mm), then times, --repeats
times each,

    oct-seg predict --model duke_dme_fluid VOLUME --out OUT --no-progress

as a fresh process (float32, the default): wall seconds and the child's CPU seconds from
rusage, and, separately, the part after start-up (Python + TensorFlow import and loading the
preset in a fresh process: _startup_seconds). Output: bench/results/clinic.json and the
"clinic" section of BENCHMARKS.md, beside the stock predict time of the paper's TransUNet on
the same volume size (bench/results/REFERENCE, the "Whole-volume job" section).
Wall time depends on other jobs sharing the cores; run it on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))
from _markdown import replace_section  # noqa: E402
from _volume import make_volume  # noqa: E402

# the "Whole-volume job" of BENCHMARKS.md: the paper's TransUNet through the same predict_files
REFERENCE = "20261126T005139Z_29553_volume.json"
SPACING = dict(scale_x=0.0116, scale_z=0.0039, distance=0.12)  # mm: Spectralis 6 mm, 61 lines
STARTUP = ("import time; t = time.perf_counter(); import oct_seg; "
           "oct_seg.from_preset({model!r}); print(time.perf_counter() - t)")


def make_vol(tif: Path) -> Path:
    """The TIFF volume's B-scans as a Heidelberg .vol beside it."""
    import numpy as np
    import tifffile
    from test_volumes import write_vol

    grey = tifffile.imread(tif).astype(np.float32) / 255.0
    path = tif.with_suffix(".vol")
    write_vol(path, list(grey ** 4), eye=b"OD", **SPACING)
    return path


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_command(command: list) -> dict:
    """Wall and CPU seconds of one child process; raises with its stderr on failure."""
    c0, t0 = _child_cpu(), time.perf_counter()
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _child_cpu() - c0
    if done.returncode:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{done.stderr[-2000:]}")
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "stdout": done.stdout.strip()}


def _startup_seconds(model: str) -> float:
    """Seconds a fresh process needs to import oct_seg (TensorFlow) and load the model."""
    done = time_command([sys.executable, "-c", STARTUP.format(model=model)])
    return float(done["stdout"].splitlines()[-1])


def markdown(result: dict) -> str:
    rows = [f"| {r['input']} | {r['n_bscans']} | {r['wall_s']} | {r['cpu_s']} | "
            f"{r['startup_s']} | {r['after_startup_s']} |" for r in result["runs"]]
    paper = result.get("paper_transunet")
    lines = [
        "## Clinic job with the shipped preset (`oct-seg predict --model duke_dme_fluid`)",
        "",
        f"Command: `{result['command']}`. Volume: {result['n_bscans']} B-scans of 496 x 768 "
        "built from the Duke DME B-scans, as a uint8 multi-page TIFF and a Heidelberg .vol. "
        f"Preset: {result['preset']}. Float32. Each row is one fresh `oct-seg predict` "
        "process writing masks, overlays, fluid_areas.csv, fluid_volumes.csv and the volume "
        "report; 'start-up' is importing oct_seg (TensorFlow) and loading the preset in a "
        f"fresh process. 1-minute load average when the timing began: "
        f"{result['load_before']:.2f} (run it with the cores otherwise idle).",
        "",
        "| input | B-scans | wall s | CPU s | start-up s | wall after start-up s |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    if paper:
        cpu = min(r["cpu_s"] for r in result["runs"])
        lines += [f"Beside it, the paper's TransUNet (Table 2 widths, 512 x 512 input, 36.5 M "
                  f"parameters) on the same 61-B-scan TIFF through the same `predict_files`, "
                  f"float32: {paper['cpu_s']:.0f} CPU s ({paper['wall_s']:.0f} s wall on a "
                  f"shared machine; ~168 s on idle cores, section 'Whole-volume job'), "
                  f"{paper['cpu_s'] / cpu:.0f} x the preset's {cpu:.1f} CPU s "
                  f"(bench/results/{REFERENCE}).", ""]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="duke_dme_fluid", help="preset or model to time")
    p.add_argument("--slices", type=int, default=61)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--results", type=Path, default=HERE / "results" / "clinic.json")
    p.add_argument("--benchmarks", type=Path, default=REPO / "BENCHMARKS.md")
    p.add_argument("--no-markdown", action="store_true", help="do not touch BENCHMARKS.md")
    a = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    command = [sys.executable, "-m", "oct_seg", "predict", "--model", a.model]
    result = {"preset": a.model, "n_bscans": a.slices, "load_before": os.getloadavg()[0],
              "command": f"oct-seg predict --model {a.model} VOLUME --out OUT --no-progress",
              "runs": []}
    startup = min(_startup_seconds(a.model) for _ in range(a.repeats))
    with tempfile.TemporaryDirectory(prefix="octseg_clinic_") as tmp:
        tmp = Path(tmp)
        tif = make_volume(tmp, a.slices)
        for volume in (tif, make_vol(tif)):
            for k in range(a.repeats):
                out = tmp / f"out_{volume.suffix[1:]}_{k}"
                timing = time_command([*command, volume, "--out", out, "--no-progress"])
                masks = len(list((out / "masks").glob("*.png")))
                if masks != a.slices or not (out / "fluid_volumes.csv").is_file():
                    raise RuntimeError(f"{out}: {masks} masks, expected {a.slices}")
                row = {"input": volume.suffix, "n_bscans": masks, "wall_s": timing["wall_s"],
                       "cpu_s": timing["cpu_s"], "startup_s": round(startup, 2),
                       "after_startup_s": round(timing["wall_s"] - startup, 2)}
                result["runs"].append(row)
                print(json.dumps(row), flush=True)
    reference = HERE / "results" / REFERENCE
    if reference.is_file():
        stock = [r for r in json.loads(reference.read_text())["paths"]
                 if r["name"] == "stock predict_files (batch 4, float32)"]
        if stock:
            result["paper_transunet"] = {"wall_s": stock[0]["times"]["total"],
                                         "cpu_s": stock[0]["cpu"]["total"]}
    a.results.write_text(json.dumps(result, indent=1) + "\n")
    if not a.no_markdown:
        replace_section(a.benchmarks, "clinic", markdown(result))
    print(f"clinic: {a.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
