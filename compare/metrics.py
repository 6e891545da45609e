"""The comparison's arithmetic, framework-free: steps-to-beat-MLP, mean +- std over seeds, model-FLOPs
utilisation, and the per-(backend, model) rows and per-backend summary built from RunResults.

    steps_to_beat(cnn_curve, mlp_final_accuracy) -> (step, seconds) | (None, None)

Steps-to-beat-MLP is the first *evaluated* step at which the CNN's test accuracy is strictly greater
than the MLP's final test accuracy (same backend, budget and seed); a tie is not a beat. Its
resolution is the evaluation interval: the true crossing lies somewhere in (previous eval, step].
"Not within budget" needs a CNN that ran its whole budget against an MLP that ran its whole budget;
a run that ended early (failed, interrupted, diverged, stopped at --target-accuracy) without a beat,
or one whose MLP ended early, is unknown, and said so.
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


def ran_its_budget(result: dict) -> bool:
    """Status ok at its last step: not failed, interrupted or diverged, nor stopped at --target-accuracy.
    (Results written before RunResults held total_steps count as whole when ok.)"""
    total = result.get("total_steps")
    return result.get("status") == "ok" and (total is None or (result.get("final") or {}).get("steps") == total)


def references(results: list) -> dict:
    """{(backend, seed): the reference model's final accuracy} over its runs that ran their whole budget."""
    return {(r["backend"], _seed(r)): final_accuracy(r) for r in results
            if r["model"] == REFERENCE_MODEL and ran_its_budget(r) and final_accuracy(r) is not None}


def beat_outcomes(results: list) -> dict:
    """{(backend, model, seed): (step, seconds) or why it is unknown} for every non-reference run whose
    backend and seed have a reference run. (step, seconds) is a beat; (None, None): not within the
    budget (both runs ran theirs whole); "ended early": the run ended early before a beat; "MLP ended
    early": the reference run did not run its whole budget (failed, diverged, interrupted, stopped
    at --target-accuracy), so there is no bar."""
    reference = references(results)
    ran = {(r["backend"], _seed(r)) for r in results if r["model"] == REFERENCE_MODEL}
    out = {}
    for r in results:
        key, name = (r["backend"], _seed(r)), (r["backend"], r["model"], _seed(r))
        if r["model"] == REFERENCE_MODEL or key not in ran:
            continue
        if key not in reference:
            out[name] = "MLP ended early"
            continue
        beat = steps_to_beat(r.get("curve"), reference[key])
        out[name] = beat if beat[0] is not None or ran_its_budget(r) else "ended early"
    return out


def beat_points(results: list) -> dict:
    """{(backend, model, seed): (step, seconds)} of the runs with a known answer (beat_outcomes without
    the unknown ones); (None, None) means: not within the budget."""
    return {k: v for k, v in beat_outcomes(results).items() if isinstance(v, tuple)}


def rows(results: list, peaks: dict | None = None) -> list:
    """One row per (backend, model), in first-seen order, aggregating its seeds:

    {"backend", "model", "device", "n", "statuses", "seeds", "accuracy": (mean, std, n),
     "beat_steps": (mean, std, n_beat), "beat_seconds": (...), "beat_of": n seeds with a reference and
     a known answer, "beat_unknown": n seeds with an MLP run but no known answer, "beat_unknown_why":
     their reasons (beat_outcomes), "train_sps", "infer_sps", "mfu", "warmup_s", "wall_s": (mean, std, n)
     each, "messages": [...]}. Speeds average the finished runs with timed steps: a run that diverged
     inside its warm-up has only the warm-up's speed, tracing included."""
    peaks = peaks or {}
    outcomes = beat_outcomes(results)
    groups: dict = {}
    for r in results:
        groups.setdefault((r["backend"], r["model"]), []).append(r)
    out = []
    for (backend, model), runs in groups.items():
        done = [r for r in runs if r.get("status") in FINISHED]
        answers = [outcomes.get((backend, model, _seed(r))) for r in runs]
        its_beats = [a for a in answers if isinstance(a, tuple)]
        unknown = [a for a in answers if isinstance(a, str)]
        timed = [r for r in done if (r.get("throughput") or {}).get("timed_steps")]  # a speed after the warm-up
        tput = [r.get("throughput") or {} for r in timed]
        out.append({
            "backend": backend, "model": model, "loop": runs[0].get("loop") or "",
            "device": runs[0].get("device") or "?",
            "n": len(runs), "seeds": [_seed(r) for r in runs], "statuses": [r.get("status") for r in runs],
            "accuracy": mean_std(final_accuracy(r) for r in done),
            "beat_steps": mean_std(b[0] for b in its_beats),
            "beat_seconds": mean_std(b[1] for b in its_beats),
            "beat_of": len(its_beats), "beat_unknown": len(unknown), "beat_unknown_why": unknown,
            "is_reference": model == REFERENCE_MODEL,
            "train_sps": mean_std(t.get("train_samples_per_s") for t in tput),
            "infer_sps": mean_std((r.get("throughput") or {}).get("infer_samples_per_s") for r in done),
            "mfu": mean_std(mfu(r, peaks.get(backend)) for r in timed),
            "warmup_s": mean_std(t.get("warmup_s") for t in tput),
            "wall_s": mean_std(wall_seconds(r) for r in runs),
            "messages": [r.get("message") for r in runs if r.get("status") not in ("ok",) and r.get("message")],
        })
    return out


def summary(results: list, eval_every: int | None = None) -> dict:
    """results.json's summary, per backend: steps_to_beat_mlp and seconds_to_beat_mlp of the CNN (mean over
    the seeds where it beat the MLP; null when it never did), the resolution (the evaluation interval),
    and per model the per-seed values: null for a seed where it did not beat the MLP within the budget,
    and with "unknown": why, for a seed whose run or MLP ended early (beat_outcomes)."""
    outcomes = beat_outcomes(results)
    out = {}
    for backend in dict.fromkeys(r["backend"] for r in results):
        models = {}
        for (b, model, seed), answer in sorted(outcomes.items(), key=lambda kv: (kv[0][1], kv[0][2])):
            if b == backend:
                step, seconds = answer if isinstance(answer, tuple) else (None, None)
                models.setdefault(model, {})[str(seed)] = {"steps": step, "seconds": seconds, **(
                    {"unknown": answer} if isinstance(answer, str) else {})}
        entry = {}
        for model, per_seed in models.items():
            steps_mean, steps_std, n_beat = mean_std(v["steps"] for v in per_seed.values())
            secs_mean, secs_std, _ = mean_std(v["seconds"] for v in per_seed.values())
            if len(per_seed) == 1:  # one seed: the values themselves (a step count stays a whole number)
                only = next(iter(per_seed.values()))
                steps_mean, secs_mean, steps_std, secs_std = only["steps"], only["seconds"], None, None
            entry[model] = {"steps_to_beat_mlp": steps_mean, "steps_to_beat_mlp_std": steps_std,
                            "seconds_to_beat_mlp": secs_mean, "seconds_to_beat_mlp_std": secs_std,
                            "beat_in_seeds": n_beat, "unknown_in_seeds": sum("unknown" in v for v in per_seed.values()),
                            "seeds": len(per_seed), "per_seed": per_seed}
        head = entry.get("cnn") or next(iter(entry.values()), None)
        out[backend] = {"steps_to_beat_mlp": head["steps_to_beat_mlp"] if head else None,
                        "seconds_to_beat_mlp": head["seconds_to_beat_mlp"] if head else None,
                        "beat_in_seeds": head["beat_in_seeds"] if head else 0, "seeds": head["seeds"] if head else 0,
                        "resolution_steps": eval_every, "models": entry}
    return out
