"""oct_seg benchmark suite: our six networks vs keras-unet-collection, plus the volume job.

One command (from the repository root):

    .venv/bin/python bench/run_benchmarks.py            # full run, ~30 min on 2 cores

measures, for every network and input size, training and inference images/s, peak RSS and
parameter count of our builder and of keras-unet-collection's (kuc 0.1.13) builder of the same
architecture, each configuration in a fresh subprocess (bench/_worker.py), interleaved
(ours, kuc, kuc, ours, ...) and repeated --reps times; ratios ours/kuc are taken within a
repetition and summarised by median and range. It then times the clinic job: one 61-slice
496 x 768 volume (multi-page TIFF built from the Duke B-scans) from file to masks and fluid
CSV with the default network (bench/_volume.py). Results: BENCHMARKS.md (tables) and
bench/results/*.csv (raw measurements).

kuc's transunet_2d and swin_unet_2d do not build under Keras 3; they run under tf-keras in a
separate virtual environment (--legacy-venv, default /work/venv-legacy, created on first use
with `python3 -m venv` + pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0
keras-unet-collection==0.1.13 pillow psutil) with TF_USE_LEGACY_KERAS=1.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _markdown import replace_section  # noqa: E402
REPO = HERE.parent
NETS = ("unet", "att_unet", "r2_unet", "unet3plus", "transunet", "swin_unet")
PAPER_FILTERS = (64, 128, 256, 512, 1024)
LEGACY_PACKAGES = ("tensorflow-cpu==2.21.0", "tf-keras==2.21.0",
                   "keras-unet-collection==0.1.13", "pillow", "psutil")
# kuc builders that fail under Keras 3 (measured with tf-keras instead)
KUC_LEGACY_ONLY = ("transunet", "swin_unet")
# paper's transformer settings (Darooei et al. 2023, Table 2)
TRANSUNET_OPTS = dict(embed_dim=96, num_mlp=384, num_heads=2, num_transformer=2)
SWIN_OPTS = dict(depth=4, stack_num_down=2, stack_num_up=2, patch_size=[4, 4],
                 num_heads=[4, 8, 8, 8], window_size=[4, 2, 2, 2], num_mlp=512)


# ------------------------------------------------------------------------------ configurations
def arch_options(net, width):
    """Filters (comma string) and architecture options of `net` at `width` x the paper's."""
    filters = [max(1, int(round(f * width))) for f in PAPER_FILTERS]
    opts = dict(batch_norm=False)
    if net == "transunet":
        opts.update(TRANSUNET_OPTS)
    if net == "swin_unet":
        opts.update(SWIN_OPTS, filter_num_begin=filters[0])
    return ",".join(map(str, filters)), opts


def variants(net, width, levers):
    """[(label, impl, opts overrides, worker flags)] for one net; the first is kuc."""
    kuc_impl = "kuc_legacy" if net in KUC_LEGACY_ONLY else "kuc"
    out = [("kuc", kuc_impl, {}, [])]
    if net == "transunet":
        # kuc tokenises the deepest map with 1x1 cells: the fair pair is ours at patch (1, 1);
        # the paper's network (4x4 patches) is measured alongside.
        out += [("ours", "ours", {"patch_size": [1, 1]}, [])]
        if width == 1.0:
            out.append(("ours_paper_p4", "ours", {"patch_size": [4, 4]}, []))
        for name in levers:
            out.append((f"ours+{name}", "ours", {"patch_size": [1, 1]}, LEVERS[name]))
        out[0] = ("kuc", kuc_impl, {"patch_size": [1, 1]}, [])
    else:
        out.append(("ours", "ours", {}, []))
        for name in levers:
            out.append((f"ours+{name}", "ours", {}, LEVERS[name]))
    for name in levers:
        if name in KUC_LEVERS:
            out.append((f"kuc+{name}", kuc_impl, dict(out[0][2]), LEVERS[name]))
    return out


LEVERS = {"xla": ["--jit"], "bf16": ["--precision", "mixed_bfloat16"]}
KUC_LEVERS = ("xla", "bf16")


# ------------------------------------------------------------------------------ environment
def ensure_legacy_venv(path: Path, create=True) -> Path | None:
    """Python of the tf-keras venv at `path`, creating it when missing and `create`."""
    py = path / "bin" / "python"
    if py.is_file():
        return py
    if not create:
        return None
    print(f"[bench] creating legacy tf-keras venv at {path} (one-off, a few minutes)", flush=True)
    subprocess.run([sys.executable if "venv" not in sys.executable else "python3", "-m", "venv",
                    str(path)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *LEGACY_PACKAGES], check=True)
    return py


def machine_info(legacy_py: Path | None) -> dict:
    info = dict(python=platform.python_version(), platform=platform.platform())
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["cpu"] = cpu
    info["cores"] = os.cpu_count()
    try:
        info["sched_cores"] = len(os.sched_getaffinity(0))
    except AttributeError:
        info["sched_cores"] = info["cores"]
    info["load_avg_start"] = os.getloadavg()
    code = ("import tensorflow as tf, keras, importlib.metadata as m;"
            "print(tf.__version__, keras.__version__, m.version('keras-unet-collection'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env()).stdout.split()
    info["tf"], info["keras"], info["kuc"] = (out + ["?"] * 3)[:3]
    if legacy_py:
        code = ("import tensorflow as tf, tf_keras, importlib.metadata as m;"
                "print(tf.__version__, tf_keras.__version__)")
        out = subprocess.run([str(legacy_py), "-c", code], capture_output=True, text=True,
                             env=_env(legacy=True)).stdout.split()
        info["legacy_tf"], info["legacy_tf_keras"] = (out + ["?"] * 2)[:2]
    return info


def _env(legacy=False):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    env.pop("TF_USE_LEGACY_KERAS", None)
    if legacy:
        env["TF_USE_LEGACY_KERAS"] = "1"
    return env


# ------------------------------------------------------------------------------ running
def run_worker(py, legacy, args, timeout):
    """Run bench/_worker.py; return its result dict (or an error dict)."""
    cmd = [str(py), str(HERE / "_worker.py"), *args]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=_env(legacy), cwd=REPO)
    except subprocess.TimeoutExpired:
        return dict(error=f"timeout after {timeout} s")
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            res = json.loads(line[len("BENCH_RESULT "):])
            res["process_s"] = time.perf_counter() - t0
            return res
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return dict(error=" | ".join(tail)[-500:])


def plan(args):
    """List of groups; each group = configs measured back to back (interleaved)."""
    groups = []
    for width, sizes, nets, section in args.sections:
        for net in nets:
            filters, base_opts = arch_options(net, width)
            for size in sizes:
                group = []
                for label, impl, over, flags in variants(net, width, args.levers):
                    if section == "paper" and label.startswith(("ours+", "kuc+")):
                        continue
                    if impl == "kuc_legacy" and args.legacy_py is None:
                        continue
                    if impl == "ours" and "ours" not in args.impls:
                        continue
                    if impl.startswith("kuc") and "kuc" not in args.impls:
                        continue
                    opts = {**base_opts, **over}
                    wargs = ["--impl", impl, "--net", net, "--size", str(size),
                             "--batch", str(args.batch), "--filters", filters,
                             "--opts", json.dumps(opts), "--warmup", str(args.warmup),
                             "--min-time", str(args.min_time),
                             "--max-steps", str(args.max_steps), *flags]
                    group.append(dict(section=section, width=width, net=net, size=size,
                                      label=label, impl=impl, args=wargs))
                if group:
                    groups.append(group)
    return groups


RAW_FIELDS = ["run_id", "section", "rep", "order", "net", "size", "width", "label", "impl",
              "filters", "opts", "params", "train_ips", "infer_ips", "train_ips_cpu", "infer_ips_cpu",
              "rss_import_mb",
              "rss_infer_mb", "rss_train_mb", "build_s", "infer_first_s", "train_first_s",
              "infer_step_s", "train_step_s", "process_s", "load_avg", "error"]


def measure(args, run_id, raw_path):
    groups = plan(args)
    n_runs = sum(len(g) for g in groups) * args.reps
    print(f"[bench] {n_runs} worker runs ({len(groups)} groups x {args.reps} reps)", flush=True)
    rows, k, t_start = [], 0, time.perf_counter()
    with open(raw_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=RAW_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for rep in range(args.reps):
            for group in groups:
                # ABAB...: alternate the order between repetitions (and groups) so that a
                # drift in machine load does not favour one side
                order = group if (rep + groups.index(group)) % 2 == 0 else group[::-1]
                for pos, cfg in enumerate(order):
                    k += 1
                    legacy = cfg["impl"] == "kuc_legacy"
                    py = args.legacy_py if legacy else Path(sys.executable)
                    res = run_worker(py, legacy, cfg["args"], args.timeout)
                    row = {**res, **dict(run_id=run_id, section=cfg["section"], rep=rep,
                                         order=pos, net=cfg["net"], size=cfg["size"],
                                         width=cfg["width"], label=cfg["label"],
                                         impl=cfg["impl"],
                                         load_avg=round(os.getloadavg()[0], 2))}
                    for key in ("infer_step_s", "train_step_s", "opts"):
                        if key in row:
                            row[key] = json.dumps(row[key])
                    row["opts"] = row.get("opts") or json.dumps(json.loads(cfg["args"][
                        cfg["args"].index("--opts") + 1]))
                    row["filters"] = cfg["args"][cfg["args"].index("--filters") + 1]
                    writer.writerow(row)
                    fh.flush()
                    rows.append(row)
                    el = time.perf_counter() - t_start
                    status = row.get("error") or (
                        f"train {row.get('train_ips', 0):.3g} img/s, "
                        f"infer {row.get('infer_ips', 0):.3g} img/s")
                    print(f"[bench {k}/{n_runs} {el:5.0f}s] rep{rep} {cfg['section']} "
                          f"{cfg['net']}@{cfg['size']} {cfg['label']}: {status}", flush=True)
    return rows


# ------------------------------------------------------------------------------ summary
def _f(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def summarize(rows):
    """One summary row per (section, net, size, label) with medians and ratios to kuc."""
    keyed = {}
    for r in rows:
        if r.get("error"):
            continue
        keyed.setdefault((r["section"], r["net"], r["size"], r["label"]), []).append(r)
    out = []
    for (section, net, size, label), rs in keyed.items():
        kuc = {(r.get("run_id"), r["rep"]): r for r in keyed.get((section, net, size, "kuc"), [])}
        s = dict(section=section, net=net, size=size, label=label, impl=rs[0]["impl"],
                 filters=rs[0]["filters"], n=len(rs), params=int(rs[0]["params"]))
        for m in ("train_ips", "infer_ips", "train_ips_cpu", "infer_ips_cpu", "rss_train_mb",
                  "rss_infer_mb"):
            vals = [_f(r.get(m)) for r in rs if _f(r.get(m)) is not None]
            s[m] = statistics.median(vals) if vals else None
        for m in ("train_ips", "infer_ips", "train_ips_cpu", "infer_ips_cpu"):
            pairs = [(r, kuc.get((r.get("run_id"), r["rep"]))) for r in rs]
            ratios = [_f(r[m]) / _f(k[m]) for r, k in pairs
                      if k is not None and _f(r.get(m)) and _f(k.get(m))]
            s[f"{m}_ratio"] = statistics.median(ratios) if ratios else None
            s[f"{m}_ratio_min"] = min(ratios) if ratios else None
            s[f"{m}_ratio_max"] = max(ratios) if ratios else None
        out.append(s)
    return out


def _ratio(s, m):
    if s["label"] == "kuc":
        return "1 (baseline)"
    if s.get(f"{m}_ratio") is None:
        return "–"
    return (f"**{s[f'{m}_ratio']:.2f}** ({s[f'{m}_ratio_min']:.2f}–"
            f"{s[f'{m}_ratio_max']:.2f})")


def _num(v, fmt="{:.3g}"):
    return "–" if v is None else fmt.format(v)


def markdown(info, summary, volume, errors, args, run_id, raw_name, wall_s):
    loads = [_f(r.get("load_avg")) for r in args.rows if _f(r.get("load_avg")) is not None]
    load = (f"load average {min(loads):.1f}-{max(loads):.1f} during the measurements" if loads
            else f"load average at start {info['load_avg_start'][0]:.1f}")
    L = ["# oct_seg benchmarks", "",
         f"Generated by `{args.command}` (run `{run_id}`, {wall_s / 60:.1f} min). "
         f"Raw measurements: `bench/results/{raw_name}`; method: `bench/README.md`.", "",
         "## Machine and versions", "",
         f"- CPU: {info['cpu']}, {info['cores']} logical cores visible "
         f"({load}: the machine is shared with other jobs, so wall-clock times and their "
         "ratios are noisy; the CPU-second ratios are the result)",
         f"- Python {info['python']}, TensorFlow {info['tf']} (CPU), Keras {info['keras']}, "
         f"keras-unet-collection {info['kuc']}",
         ]
    if info.get("legacy_tf"):
        L.append(f"- kuc TransUNet / Swin-UNet: TensorFlow {info['legacy_tf']} + tf-keras "
                 f"{info['legacy_tf_keras']} (TF_USE_LEGACY_KERAS=1, venv "
                 f"`{args.legacy_venv}`), since they do not build under Keras 3")
    if args.reuse_raw:
        L += ["- Batch 2, float32 unless marked, Adam + binary cross-entropy, random inputs; "
              "1 warm-up step, then timed steps; each configuration in a fresh process; "
              "settings per run in the measurement commands below.", "",
              "Measurement commands (merged into this report with `--reuse-raw`):", ""]
        L += [f"    {c}" for c in args.measured_by] + [""]
    else:
        L += [f"- Batch {args.batch}, float32, Adam + binary cross-entropy, random inputs; "
              f"{args.warmup} warm-up step, then timed steps until {args.min_time:g} s or "
              f"{args.max_steps} steps; {args.reps} interleaved repetitions, each "
              "configuration in a fresh process.", ""]
    sections = [("paper", "Paper-width networks (filters 64-1024) at 512 x 512"),
                ("grid", "All six networks")]
    for sec, title in sections:
        rows = [s for s in summary if s["section"] == sec]
        if not rows:
            continue
        filt = sorted({s["filters"] for s in rows})
        L += [f"## {title}", "", f"Filters: {', '.join(filt)} (Swin-UNet: first value = "
              "filter_num_begin). Ratio = ours / kuc images/s within a repetition: median "
              "(min–max); wall-clock ratio and ratio of images per CPU-second of the process "
              "(less sensitive to other jobs on the shared cores). RSS = peak resident set of the process (MB), TF runtime included.",
              "",
              "| net | size | variant | params | train img/s | train ratio | train ratio "
              "(CPU-s) | infer img/s | infer ratio | infer ratio (CPU-s) | peak RSS train / "
              "infer (MB) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        order = {n: i for i, n in enumerate(NETS)}
        for s in sorted(rows, key=lambda s: (order[s["net"]], s["size"], s["label"] != "kuc",
                                             s["label"])):
            L.append(f"| {s['net']} | {s['size']} | {s['label']} ({s['impl']}) | "
                     f"{s['params']:,} | {_num(s['train_ips'])} | {_ratio(s, 'train_ips')} | "
                     f"{_ratio(s, 'train_ips_cpu')} | "
                     f"{_num(s['infer_ips'])} | {_ratio(s, 'infer_ips')} | "
                     f"{_ratio(s, 'infer_ips_cpu')} | "
                     f"{_num(s['rss_train_mb'], '{:.0f}')} / "
                     f"{_num(s['rss_infer_mb'], '{:.0f}')} |")
        L.append("")
    if volume:
        L += ["## Whole-volume job (61 x 496 x 768 Spectralis-size volume, default network)",
              ""]
        L += volume_markdown(volume)
    if errors:
        L += ["## Failed configurations", ""]
        L += [f"- {e}" for e in errors]
        L.append("")
    L += ["## Notes", "",
          "- kuc's TransUNet tokenises the deepest CNN map with 1 x 1 cells; the fair pair is "
          "ours at `patch_size=(1, 1)` (`ours`). `ours_paper_p4` is the paper's network "
          "(4 x 4 patches, 64 tokens), a different architecture, shown for reference. Ours also "
          "differs from kuc by design (residual fusion of the token map, final LayerNorm, no "
          "redundant 1x1 conv before tokens, no GELU after the MLP's second Dense): see "
          "oct_seg/models/transunet.py.",
          "- kuc TransUNet / Swin-UNet run on tf-keras (Keras 2) in another venv; their ratios "
          "compare frameworks as well as layer structure.",
          "- `ours+xla` = compile(jit_compile=True); `ours+bf16` = mixed_bfloat16 policy "
          "(different numerics, a GPU-user option; reported for the CPU effect).", ""]
    return "\n".join(L)


def volume_markdown(v):
    if v.get("error"):
        return [f"Failed: {v['error']}", ""]
    L = [f"Volume: {v['n_slices']} B-scans {v['height']} x {v['width']} uint8 multi-page TIFF "
         f"built from the Duke DME B-scans; network `{v['network']}` "
         f"({v['params']:,} parameters, untrained), model input {v['model_input']}.", "",
         "Each cell: wall s / CPU s (process CPU time, all threads). Wall time depends on the "
         "other jobs sharing the 2 cores; CPU time does not. 'idle 2-core estimate' = model "
         "CPU / 2 (two threads) + other stages' CPU (single-threaded), scaled to "
         f"{v['n_slices']} B-scans.", "",
         "| path | B-scans | read | preprocess | model | postprocess | predict_image "
         "(pre+model+post) | write | other | total | idle 2-core estimate for "
         f"{v['n_slices']} |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    stages = ("read", "preprocess", "model", "postprocess", "predict_image", "write", "other",
              "total")
    for p in v["paths"]:
        t, c = p["times"], p.get("cpu", {})
        n = p.get("n_slices", v["n_slices"])
        cells = []
        for k in stages:
            if k in t:
                cells.append(f"{t[k]:.1f} / {c[k]:.1f}" if k in c else f"{t[k]:.1f} / –")
            else:
                cells.append("–")
        est = None
        if c:
            parallel = sum(c.get(k, 0) for k in ("model", "predict_image"))
            serial = c["total"] - parallel
            est = (parallel / 2 + serial) * v["n_slices"] / n
        L.append(f"| {p['name']} | {n} | " + " | ".join(cells) + f" | {_num(est, '{:.0f} s')} |")
    L += ["", *[f"- {n}" for n in v.get("notes", [])], ""]
    return L


# ------------------------------------------------------------------------------ main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="256,512", help="input sizes (default 256,512)")
    p.add_argument("--nets", default=",".join(NETS), help=f"subset of {','.join(NETS)}")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions (default 3)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--width", type=float, default=0.25,
                   help="filters = width x paper's [64..1024] for the six-network grid "
                        "(default 0.25 -> 16..256, so the grid fits the time budget)")
    p.add_argument("--paper-nets", default="unet,transunet",
                   help="nets also measured at paper width (filters 64..1024) at 512 x 512; "
                        "'' to skip (default unet,transunet: the speed targets)")
    p.add_argument("--levers", default="",
                   help="extra variants of ours (and kuc) in the grid: xla, bf16 (comma list)")
    p.add_argument("--impls", default="ours,kuc", help="ours,kuc (default both)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--min-time", type=float, default=2.0, help="seconds of timed steps")
    p.add_argument("--max-steps", type=int, default=3)
    p.add_argument("--timeout", type=float, default=900, help="per worker process (s)")
    p.add_argument("--legacy-venv", default="/work/venv-legacy",
                   help="tf-keras venv for kuc transunet/swin (created when missing)")
    p.add_argument("--no-legacy", action="store_true", help="skip kuc transunet/swin_unet")
    p.add_argument("--volume", default="on", choices=("on", "off", "only"),
                   help="time the 61-slice volume job (default on)")
    p.add_argument("--volume-slices", type=int, default=61)
    p.add_argument("--volume-paths", default="stock,stock-bf16,fast",
                   help="stock (oct_seg.predict.predict_files), stock-bf16 (the same in "
                        "mixed_bfloat16), fast (compiled predict, every stage timed)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: size 64, width 1/8, 1 rep, short timing, no paper section, "
                        "volume of 3 slices")
    p.add_argument("--reuse-raw", nargs="*", default=[], metavar="CSV",
                   help="build the report from these raw CSVs of earlier runs instead of "
                        "measuring (e.g. to merge runs made separately on a busy machine)")
    p.add_argument("--reuse-volume", nargs="*", default=[], metavar="JSON",
                   help="volume-job results of earlier runs (bench/_volume.py --out-json); "
                        "several are merged into one table")
    p.add_argument("--no-roofline", dest="roofline", action="store_false",
                   help="skip the conv/matmul rate measurement (bench/_roofline.py)")
    p.add_argument("--measured-by", action="append", default=[], metavar="COMMAND",
                   help="with --reuse-raw: the commands that measured the reused runs "
                        "(listed in the report)")
    p.add_argument("--reuse-roofline", default=None, metavar="JSON",
                   help="output of an earlier bench/_roofline.py run")
    p.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    p.add_argument("--results-dir", default=str(HERE / "results"))
    a = p.parse_args(argv)
    a.command = "python bench/run_benchmarks.py" + ("" if argv is None and len(sys.argv) == 1
                                                    else " " + " ".join(argv or sys.argv[1:]))
    if a.quick:
        a.sizes, a.width, a.reps, a.paper_nets = "64", 0.125, 1, ""
        a.min_time, a.max_steps, a.volume_slices = 0.2, 2, 3
    a.sizes = [int(s) for s in a.sizes.split(",") if s]
    a.nets = [n for n in a.nets.split(",") if n]
    a.paper_nets = [n for n in a.paper_nets.split(",") if n]
    a.levers = [n for n in a.levers.split(",") if n]
    a.impls = [n for n in a.impls.split(",") if n]
    a.volume_paths = [n for n in a.volume_paths.split(",") if n]
    for n in a.nets + a.paper_nets:
        if n not in NETS:
            p.error(f"unknown net {n!r}; choose from {','.join(NETS)}")
    for n in a.levers:
        if n not in LEVERS:
            p.error(f"unknown lever {n!r}; choose from {','.join(LEVERS)}")
    a.sections = [(a.width, a.sizes, a.nets, "grid")]
    if a.paper_nets:
        a.sections.insert(0, (1.0, [512], a.paper_nets, "paper"))
    return a


def main(argv=None):
    args = parse_args(argv)
    t0 = time.perf_counter()
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + f"_{os.getpid()}"
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    needs_legacy = ("kuc" in args.impls and not args.no_legacy and args.volume != "only" and
                    not args.reuse_raw and
                    any(n in KUC_LEGACY_ONLY for n in args.nets + args.paper_nets))
    args.legacy_py = (ensure_legacy_venv(Path(args.legacy_venv)) if needs_legacy else None)
    info = machine_info(args.legacy_py)
    print(f"[bench] {json.dumps(info)}", flush=True)
    rows = []
    raw_name = f"{run_id}_raw.csv"
    if args.reuse_raw:
        for path in args.reuse_raw:
            with open(path, newline="") as fh:
                rows += [dict(r, rep=int(r["rep"]), size=int(r["size"]))
                         for r in csv.DictReader(fh)]
        raw_name = ", ".join(Path(p).name for p in args.reuse_raw)
    elif args.volume != "only":
        rows = measure(args, run_id, results / raw_name)
    args.rows = rows
    summary = summarize(rows)
    if summary:
        with open(results / f"{run_id}_summary.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(summary[0]))
            w.writeheader()
            w.writerows(summary)
    volume = None
    if args.reuse_volume:
        parts = [json.loads(Path(p).read_text()) for p in args.reuse_volume]
        volume = parts[0]
        for extra in parts[1:]:
            volume["paths"] += extra["paths"]
            volume["notes"] += [n for n in extra["notes"] if n not in volume["notes"]]
    elif args.volume != "off" and not args.reuse_raw:
        volume = run_volume(args, results / f"{run_id}_volume.json")
    errors = [f"{r['net']}@{r['size']} {r['label']} rep{r['rep']}: {r['error']}"
              for r in rows if r.get("error")]
    if args.reuse_roofline:
        text = Path(args.reuse_roofline).read_text().strip()
        roof = json.loads(text.split("ROOFLINE ", 1)[-1])
    else:
        roof = run_roofline(args) if args.roofline else None
    wall = time.perf_counter() - t0
    md = markdown(info, summary, volume, errors, args, run_id, raw_name, wall)
    if roof:
        md += "\n" + "\n".join(roofline_markdown(roof, summary))
    replace_section(args.out, "speed", md)  # other sections (accuracy) are kept
    print(f"[bench] wrote {args.out} and {results}/{run_id}_*; {wall / 60:.1f} min", flush=True)
    return 0


def run_roofline(args):
    """Machine conv/matmul rate and the paper networks' GFLOP per image (bench/_roofline.py)."""
    cmd = [sys.executable, str(HERE / "_roofline.py")] + (["--quick"] if args.quick else [])
    proc = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=args.timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("ROOFLINE "):
            return json.loads(line[len("ROOFLINE "):])
    return dict(error=(proc.stderr or "no output").strip().splitlines()[-1][-300:])


def roofline_markdown(roof, summary):
    if not roof or roof.get("error"):
        return [f"Roofline measurement failed: {roof.get('error') if roof else 'not run'}", ""]
    pk = roof["peak"]
    L = ["## What limits speed on this CPU", "",
         "oneDNN kernel rates in GFLOP per CPU-second (one core; independent of other load):",
         "", "| dtype | 3x3 conv 256x256x128->128 | matmul 2048^2 |", "|---|---|---|"]
    for dt, v in pk.items():
        L.append(f"| {dt} | {v['conv3x3']['per_cpu_s']:.0f} | {v['matmul']['per_cpu_s']:.0f} |")
    L.append("")
    models = roof.get("models", {})
    if models:
        L += ["Forward GFLOP per image (convolutions, 2 x MACs): " + ", ".join(
            f"{k} {v:.0f}" for k, v in models.items()) + ". A train step costs ~3x the "
            "forward pass.", ""]
        fp32 = pk.get("float32", {}).get("conv3x3", {}).get("per_cpu_s")
        rows = [s for s in summary if s["net"] in ("unet", "transunet")]
        if fp32 and rows:
            L += ["Achieved rate = forward GFLOP/image (paper value x (filters / paper "
                  "filters)^2 x (size / 512)^2) x images per CPU-second (x3 for training):", "",
                  "| net | size | filters | variant | achieved GFLOP/CPU-s train | infer | "
                  "fraction of the fp32 conv rate (train / infer) |",
                  "|---|---|---|---|---|---|---|"]
            for s in rows:
                key = ("unet_paper_512" if s["net"] == "unet" else
                       "transunet_paper_512" if s["label"] == "ours_paper_p4" else
                       "transunet_paper_512_p1")
                first = int(str(s["filters"]).split(",")[0])
                g = models.get(key)
                g = g and g * (first / 64) ** 2 * (int(s["size"]) / 512) ** 2
                tr = s.get("train_ips_cpu") and g and 3 * g * s["train_ips_cpu"]
                inf = s.get("infer_ips_cpu") and g and g * s["infer_ips_cpu"]
                L.append(f"| {s['net']} | {s['size']} | {s['filters']} | {s['label']} | "
                         f"{_num(tr, '{:.0f}')} | "
                         f"{_num(inf, '{:.0f}')} | {_num(tr and tr / fp32, '{:.2f}')} / "
                         f"{_num(inf and inf / fp32, '{:.2f}')} |")
            L.append("")
    return L


def run_volume(args, out_json):
    cmd = [sys.executable, str(HERE / "_volume.py"), "--slices", str(args.volume_slices),
           "--paths", ",".join(args.volume_paths), "--out-json", str(out_json)]
    if args.quick:
        cmd += ["--quick"]
    print(f"[bench] volume job: {' '.join(cmd[1:])}", flush=True)
    proc = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=args.timeout * 2)
    if proc.returncode != 0 or not out_json.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return dict(error=" | ".join(tail)[-500:])
    result = json.loads(out_json.read_text())
    for p in result["paths"]:
        print(f"[bench] volume {p['name']}: " + ", ".join(
            f"{k} {v:.1f}s" for k, v in p["times"].items()), flush=True)
    return result


if __name__ == "__main__":
    sys.exit(main())
