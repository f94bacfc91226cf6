"""Ranked vs random filters on a pretrained ImageNet classifier (DeepCorrect Fig. 9 / Table 6).

Correction units on `--fraction` of one conv layer's filters (`--layer`, default the
first), chosen two ways, every model trained label-free with the same budget:

- `ranked-s<seed>`: the most susceptible filters by the exact ranking (`deepcorrect.rank`
  with `--score`, on the first `--rank-photos` training photos), trained from
  `--ranked-seeds` different unit initialisations;
- `random-t<trial>`: `--trials` seeded random sets of the same size.

The photos (an image folder, e.g. `../shared/data/imagenet-samples`) are split as
`examples/imagenet_deepcorrect.py` splits them (`--test-fraction`, `--seed`). Training is
`deepcorrect.train(teacher=pretrained)`: no labels, the target is the frozen model's
prediction on the clean photo, levels drawn from `--levels`. The test photos are distorted
once (seed 1) at every level and every model sees the same images.

Two tests of "ranked beats random":
- Welch's t-test between the models' mean top-1 over the distorted levels (each trained
  model one sample: the ranked seeds against the random draws);
- the paper's Table 6: a paired t-test between the ranked models' mean and the random
  models' mean, the pairs being the clean photos and every level.

Outputs in `--out`: `settings.json`, `ranking.json`, `models/*.keras`, `results.json` (every
model, written after each one: an interrupted run resumes; a run with other settings is
refused) and `report.md`.

Usage (from the repository root):

    .venv/bin/python examples/ranked_vs_random_imagenet.py --model MobileNetV2 \\
        --weights ../shared/models/mobilenet_v2_1.0_224.weights.h5 \\
        --data ../shared/data/imagenet-samples --out out/ranked_vs_random_imagenet
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def parse_args(argv=None):
    from robustkit.seeds import seed_argument

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True,
                   help="a .keras file taking 0..255 pixels, or a keras.applications name")
    p.add_argument("--weights", default=None, help="weights file of a keras.applications model")
    p.add_argument("--data", required=True, help="an image folder (labels.csv or class folders)")
    p.add_argument("--photos", type=int, default=None, help="use the first N photos (default all)")
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--layer", default=None, help="the conv layer (default the first)")
    p.add_argument("--fraction", type=float, default=0.25,
                   help="share of the layer's filters corrected (default 0.25)")
    p.add_argument("--trials", type=int, default=5, help="random sets (default 5)")
    p.add_argument("--ranked-seeds", type=int, default=3,
                   help="unit initialisations of the ranked model (default 3)")
    p.add_argument("--rank-photos", type=int, default=200)
    p.add_argument("--score", default="log_prob",
                   choices=("log_prob", "log_prob_magnitude", "gain", "relative_error"),
                   help="the ranking's score (default log_prob; see deepcorrect.rank)")
    p.add_argument("--distortion", default="gaussian_blur")
    p.add_argument("--levels", type=float, nargs="+", default=[2.0, 4.0],
                   help="ranking, training and test levels (default 2 4)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=0.001)
    p.add_argument("--out", default="out/ranked_vs_random_imagenet")
    p.add_argument("--seed", type=seed_argument, default=0)
    return p.parse_args(argv)


def check(args) -> None:
    from distort import registry
    from robustkit.cli_common import CLIError, require_positive

    require_positive(args, "photos", "trials", "ranked_seeds", "rank_photos", "epochs",
                     "batch_size")
    registry.check_name(args.distortion)
    if not 0 < args.test_fraction < 1:
        raise CLIError(f"--test-fraction must be in (0, 1). Received: {args.test_fraction}")
    if not 0 < args.fraction <= 1:
        raise CLIError(f"--fraction must be in (0, 1]. Received: {args.fraction}")
    if args.trials < 2 or args.ranked_seeds < 2:
        raise CLIError("--trials and --ranked-seeds must be at least 2 (a t-test needs them). "
                       f"Received: {args.trials}, {args.ranked_seeds}")
    if not args.learning_rate > 0:
        raise CLIError(f"--learning-rate must be > 0. Received: {args.learning_rate}")
    if not Path(args.data).is_dir():
        raise CLIError(f"--data: no such folder: {args.data}")


# What the trained models depend on; `--trials` and `--ranked-seeds` only add or leave out models.
SETTINGS = ("model", "weights", "photos", "test_fraction", "layer", "fraction", "rank_photos",
            "score", "distortion", "levels", "epochs", "batch_size", "learning_rate", "seed")


def keep_settings(out: Path, args) -> None:
    """Writes `out/settings.json`, or refuses an `out` whose models were made otherwise."""
    from robustkit.cli_common import CLIError
    from robustkit.io import atomic_write_text

    settings = {k: getattr(args, k) for k in SETTINGS}
    path = out / "settings.json"
    if path.is_file():
        old = json.loads(path.read_text())
        changed = sorted(k for k in SETTINGS if old.get(k) != settings[k])
        if changed:
            raise CLIError(f"--out {out} holds models made with other settings ({', '.join(changed)}"
                           f"); use a new --out")
        return
    atomic_write_text(path, json.dumps(settings, indent=1))


def plan(order: np.ndarray, count: int, ranked_seeds: int, trials: int, seed: int) -> list[dict]:
    """The models: `{name, group, seed, filters}`; random sets from `random_filter_sets`.

    Example:

    >>> [m["name"] for m in plan(np.arange(8), 2, 2, 2, seed=0)]
    ['ranked-s0', 'ranked-s1', 'random-t0', 'random-t1']
    """
    from studies.analysis import random_filter_sets

    models = [{"name": f"ranked-s{s}", "group": "ranked", "seed": s,
               "filters": [int(j) for j in order[:count]]} for s in range(ranked_seeds)]
    sets = random_filter_sets(len(order), count, trials, seed)
    models += [{"name": f"random-t{t}", "group": "random", "seed": t,
                "filters": sorted(int(j) for j in chosen)} for t, chosen in enumerate(sets)]
    return models


def tests(results: list[dict]) -> dict:
    """Welch's t-test on the models' mean distorted top-1, and the paper's paired test.

    Example:

    >>> r = [{"group": "ranked", "accuracy": [0.9, 0.6, 0.3]},
    ...      {"group": "ranked", "accuracy": [0.9, 0.62, 0.31]},
    ...      {"group": "random", "accuracy": [0.9, 0.5, 0.2]},
    ...      {"group": "random", "accuracy": [0.9, 0.52, 0.22]}]
    >>> round(tests(r)["welch"]["mean_difference"], 2)
    0.1
    """
    from scipy import stats

    from studies.analysis import paired_ttest

    acc = {g: np.array([r["accuracy"] for r in results if r["group"] == g])
           for g in ("ranked", "random")}
    distorted = {g: a[:, 1:].mean(axis=1) for g, a in acc.items()}
    welch = stats.ttest_ind(distorted["ranked"], distorted["random"], equal_var=False)
    return {
        "welch": {"t": float(welch.statistic), "p": float(welch.pvalue),
                  "n_ranked": int(len(distorted["ranked"])),
                  "n_random": int(len(distorted["random"])),
                  "mean_difference": float(distorted["ranked"].mean()
                                           - distorted["random"].mean())},
        "paired": paired_ttest(acc["ranked"].mean(axis=0), acc["random"].mean(axis=0)),
    }


def report(results: list[dict], base: list[float], levels: list[float], header: str,
           result: dict) -> str:
    """The markdown report: one row per model, the group means and both tests."""
    from studies.analysis import markdown_table

    cols = ["clean"] + [f"{v:g}" for v in levels]

    def row(name, acc, filters=""):
        return {"model": name, **dict(zip(cols, acc)),
                "distorted mean": float(np.mean(acc[1:])), "filters": filters}

    rows = [row("baseline", base)]
    rows += [row(r["name"], r["accuracy"], " ".join(map(str, r["filters"]))) for r in results]
    for g in ("ranked", "random"):
        accs = [r["accuracy"] for r in results if r["group"] == g]
        rows.append(row(f"**{g}: mean of {len(accs)}**", list(np.mean(accs, axis=0))))
    w, p = result["welch"], result["paired"]
    return (f"{header}\n\n" + markdown_table(rows, ["model", *cols, "distorted mean", "filters"])
            + f"\n\nWelch's t-test, mean distorted top-1 ({w['n_ranked']} ranked models against "
            f"{w['n_random']} random): difference {w['mean_difference']:+.4f}, "
            f"t = {w['t']:.3f}, p = {w['p']:.4f}.\n\nPaired t-test (Table 6), ranked mean "
            f"against random mean over clean and {len(levels)} levels: difference "
            f"{p['mean_difference']:+.4f}, t = {p['t']:.3f}, p = {p['p']:.4f}.\n")


def run(args) -> int:
    import keras

    import deepcorrect
    from deepcorrect.graph import conv_layers, corrected_count
    from robustkit.io import atomic_path, atomic_write_text
    from studies import imagenet

    check(args)
    out = Path(args.out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    keep_settings(out, args)
    pretrained, preprocess, size = imagenet.load_model(args.model, args.weights)
    prep = preprocess or (lambda x: x)
    images, labels, files = imagenet.load_photos(args.data, size, args.photos, out)
    train, test = imagenet.split_indices(len(images), args.test_fraction, args.seed)
    imagenet.write_split(out, files, train, test, args.seed, args.test_fraction)
    layer = args.layer or conv_layers(pretrained)[0].name

    def top1(model, x):
        scores = model.predict(prep(x), batch_size=50, verbose=0)
        return float(np.mean(np.argmax(scores, -1) == labels[test]))

    # Label-free: the ranking's and the training's targets are the model's clean predictions.
    rank_ids = train[: args.rank_photos]
    clean_pred = np.argmax(pretrained.predict(prep(images[rank_ids].astype("float32")),
                                              batch_size=50, verbose=0), -1)
    tick = time.perf_counter()
    ranking = deepcorrect.rank(pretrained, images[rank_ids], clean_pred, args.distortion,
                               args.levels, layers=[layer], score=args.score,
                               preprocess=preprocess, seed=args.seed, progress=False,
                               checkpoint=out / "ranking.json")
    rank_seconds = time.perf_counter() - tick
    order = ranking.order(layer)
    count = corrected_count(args.fraction, len(order))
    reliability = ranking.reliability(layer).spearman_brown
    print(f"{layer}: {count} of {len(order)} filters; ranking reliability {reliability:.2f} "
          f"({rank_seconds:.0f} s)", flush=True)

    conditions = [None] + list(args.levels)
    test_sets = [imagenet.distorted(images[test], None if v is None else args.distortion, v,
                                    seed=1, batch=50) for v in conditions]
    results_path = out / "results.json"
    done = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if "baseline" not in done:
        done["baseline"] = [top1(pretrained, x) for x in test_sets]
    for m in plan(order, count, args.ranked_seeds, args.trials, args.seed):
        if m["name"] in done:
            continue
        print(f"[{m['name']}] units on {layer} filters {m['filters']}", flush=True)
        model = deepcorrect.wrap(pretrained, {layer: m["filters"]}, beta=count / len(order),
                                 layers=[layer], seed=m["seed"])
        tick = time.perf_counter()
        deepcorrect.train(model, images[train], None, args.distortion, args.levels,
                          teacher=pretrained, preprocess=preprocess, preset="label_free",
                          epochs=args.epochs, batch_size=args.batch_size,
                          learning_rate=args.learning_rate, seed=args.seed + m["seed"],
                          checkpoint_dir=out / "checkpoints" / m["name"], verbose=0)
        seconds = time.perf_counter() - tick
        with atomic_path(out / "models" / f"{m['name']}.keras") as tmp:
            model.save(tmp)
        done[m["name"]] = {**m, "accuracy": [top1(model, x) for x in test_sets],
                           "train_seconds": seconds}
        print(f"[{m['name']}] top-1 {np.round(done[m['name']]['accuracy'], 3).tolist()} "
              f"({seconds:.0f} s)", flush=True)
        atomic_write_text(results_path, json.dumps(done, indent=1))
        keras.backend.clear_session()
    atomic_write_text(results_path, json.dumps(done, indent=1))
    results = [v for k, v in done.items() if k != "baseline"]
    result = tests(results)
    header = (f"# Ranked vs random filters: {args.model}, `{layer}`, {args.distortion}\n\n"
              f"{len(test)} test photos, {len(train)} training photos (no labels), "
              f"{count} of {len(order)} filters per model; exact `{args.score}` ranking on "
              f"{len(rank_ids)} photos (split-half reliability {reliability:.2f}); "
              f"{args.epochs} epochs of batch {args.batch_size}, units at "
              f"{args.learning_rate:g} (`label_free` preset).")
    text = report(results, done["baseline"], list(args.levels), header, result)
    atomic_write_text(out / "tests.json", json.dumps(result, indent=1))
    atomic_write_text(out / "report.md", text)
    print(text)
    return 0


def main(argv=None) -> int:
    from robustkit.cli_common import fail_cleanly

    return fail_cleanly(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
