"""The comparison's arithmetic, framework-free: steps-to-beat-MLP, mean +- std over seeds, model-FLOPs
utilisation, and the per-(backend, model) rows and per-backend summary built from RunResults.

    steps_to_beat(cnn_curve, mlp_final_accuracy) -> (step, seconds) | (None, None)

Steps-to-beat-MLP is the first *evaluated* step at which the CNN's test accuracy is strictly greater
than the MLP's final test accuracy (same backend, budget and seed); a tie is not a beat. Its
resolution is the evaluation interval: the true crossing lies somewhere in (previous eval, step].
"""
from __future__ import annotations

import math
import statistics

REFERENCE_MODEL = "mlp"  # the model every other model is timed against
FINISHED = ("ok", "diverged")  # statuses whose run is complete (kept by --resume, shown as results)


def steps_to_beat(curve: list, reference_accuracy: float | None) -> tuple:
    """(step, seconds) of the first curve point whose test_accuracy > reference_accuracy, else (None, None).

    `curve` is a RunResult curve: [{"step", "seconds", "test_accuracy", ...}] in step order."""
    if reference_accuracy is None:
        return None, None
    for point in sorted(curve or [], key=lambda p: p["step"]):
        acc = point.get("test_accuracy")
        if acc is not None and acc > reference_accuracy:
            return point["step"], point.get("seconds")
    return None, None


def mean_std(values) -> tuple:
    """(mean, sample std, n) over the values that are not None; (None, None, 0) when there are none.
    One value has std 0.0 (nothing to spread)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return None, None, 0
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0), len(xs)


def achieved_flops(result: dict) -> float | None:
    """Training FLOP/s the run achieved: training FLOPs per sample x train samples per second."""
    fps = result.get("flops_per_sample")
    sps = (result.get("throughput") or {}).get("train_samples_per_s")
    return fps * sps if fps and sps else None


def mfu(result: dict, peak_flops: float | None) -> float | None:
    """Model-FLOPs utilisation: achieved training FLOP/s over the device's measured fp32 matmul peak.
    The peak is one device's: a data-parallel run on N GPUs is held to N of them (N logical CPU
    devices share one CPU, whose whole peak was measured)."""
    achieved = achieved_flops(result)
    if not (achieved and peak_flops):
        return None
    n = result.get("devices") or 1
    return achieved / (peak_flops * (n if result.get("device") not in (None, "cpu") else 1))


def final_accuracy(result: dict) -> float | None:
    return (result.get("final") or {}).get("test_accuracy")


def wall_seconds(result: dict) -> float | None:
    """The child process's whole life (start-up, data, training, evaluations) as the harness timed it;
    the backend's own wall clock (from model build to the end) when the harness did not time it."""
    return result.get("process_seconds") or (result.get("final") or {}).get("wall_seconds")


def _seed(result: dict) -> int:
    return (result.get("config") or {}).get("seed", 0)


def references(results: list) -> dict:
    """{(backend, seed): the reference model's final accuracy} over its finished runs."""
    return {(r["backend"], _seed(r)): final_accuracy(r) for r in results
            if r["model"] == REFERENCE_MODEL and r.get("status") in FINISHED}


def beat_points(results: list) -> dict:
    """{(backend, model, seed): (step, seconds)} for every non-reference model that has a reference
    run (same backend and seed) with a final accuracy. (None, None) means: not within the budget.
    A run that did not finish (failed, interrupted) is left out unless its curve already beat the
    reference: whether it would have within the budget is unknown."""
    reference = references(results)
    out = {}
    for r in results:
        key = (r["backend"], _seed(r))
        if r["model"] == REFERENCE_MODEL or reference.get(key) is None:
            continue
        beat = steps_to_beat(r.get("curve"), reference[key])
        if beat[0] is not None or r.get("status") in FINISHED:
            out[(r["backend"], r["model"], _seed(r))] = beat
    return out


def rows(results: list, peaks: dict | None = None) -> list:
    """One row per (backend, model), in first-seen order, aggregating its seeds:

    {"backend", "model", "device", "n", "statuses", "seeds", "accuracy": (mean, std, n),
     "beat_steps": (mean, std, n_beat), "beat_seconds": (...), "beat_of": n seeds with a reference and
     a known answer, "beat_unknown": n seeds with a reference whose run ended early without a beat,
     "train_sps", "infer_sps", "mfu", "warmup_s", "wall_s": (mean, std, n) each, "messages": [...]}"""
    peaks = peaks or {}
    beats = beat_points(results)
    reference = references(results)
    groups: dict = {}
    for r in results:
        groups.setdefault((r["backend"], r["model"]), []).append(r)
    out = []
    for (backend, model), runs in groups.items():
        done = [r for r in runs if r.get("status") in FINISHED]
        its_beats = [beats[(backend, model, _seed(r))] for r in runs if (backend, model, _seed(r)) in beats]
        tput = [r.get("throughput") or {} for r in done]
        out.append({
            "backend": backend, "model": model, "loop": runs[0].get("loop") or "",
            "device": runs[0].get("device") or "?",
            "n": len(runs), "seeds": [_seed(r) for r in runs], "statuses": [r.get("status") for r in runs],
            "accuracy": mean_std(final_accuracy(r) for r in done),
            "beat_steps": mean_std(b[0] for b in its_beats),
            "beat_seconds": mean_std(b[1] for b in its_beats),
            "beat_of": len(its_beats),
            "beat_unknown": sum(1 for r in runs if (backend, model, _seed(r)) not in beats
                                and reference.get((backend, _seed(r))) is not None),
            "is_reference": model == REFERENCE_MODEL,
            "train_sps": mean_std(t.get("train_samples_per_s") for t in tput),
            "infer_sps": mean_std(t.get("infer_samples_per_s") for t in tput),
            "mfu": mean_std(mfu(r, peaks.get(backend)) for r in done),
            "warmup_s": mean_std(t.get("warmup_s") for t in tput),
            "wall_s": mean_std(wall_seconds(r) for r in runs),
            "messages": [r.get("message") for r in runs if r.get("status") not in ("ok",) and r.get("message")],
        })
    return out


def summary(results: list, eval_every: int | None = None) -> dict:
    """results.json's summary, per backend: steps_to_beat_mlp and seconds_to_beat_mlp of the CNN (mean over
    the seeds where it beat the MLP; null when it never did), the resolution (the evaluation interval),
    and per model the per-seed values (null for a seed where it did not beat the MLP within the budget)."""
    beats = beat_points(results)
    out = {}
    for backend in dict.fromkeys(r["backend"] for r in results):
        models = {}
        for (b, model, seed), (step, seconds) in sorted(beats.items(), key=lambda kv: (kv[0][1], kv[0][2])):
            if b == backend:
                models.setdefault(model, {})[str(seed)] = {"steps": step, "seconds": seconds}
        entry = {}
        for model, per_seed in models.items():
            steps_mean, steps_std, n_beat = mean_std(v["steps"] for v in per_seed.values())
            secs_mean, secs_std, _ = mean_std(v["seconds"] for v in per_seed.values())
            if len(per_seed) == 1:  # one seed: the values themselves (a step count stays a whole number)
                only = next(iter(per_seed.values()))
                steps_mean, secs_mean, steps_std, secs_std = only["steps"], only["seconds"], None, None
            entry[model] = {"steps_to_beat_mlp": steps_mean, "steps_to_beat_mlp_std": steps_std,
                            "seconds_to_beat_mlp": secs_mean, "seconds_to_beat_mlp_std": secs_std,
                            "beat_in_seeds": n_beat, "seeds": len(per_seed), "per_seed": per_seed}
        head = entry.get("cnn") or next(iter(entry.values()), None)
        out[backend] = {"steps_to_beat_mlp": head["steps_to_beat_mlp"] if head else None,
                        "seconds_to_beat_mlp": head["seconds_to_beat_mlp"] if head else None,
                        "resolution_steps": eval_every, "models": entry}
    return out
