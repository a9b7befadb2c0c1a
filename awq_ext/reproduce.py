"""``python -m awq_ext.reproduce {table1,table2,table5,table7,table8,calib_budget,fig7,all}``: the paper's analyses.

Each experiment loads the model once, restores the float weights between rows, and writes
``<out>/<name>.md`` and ``<out>/<name>.json`` (``fig7`` also ``fig7.png``). Rows and AWQ search records
are cached under ``<out>/cache`` so an interrupted run resumes and tables share searches
(``--no-cache`` recomputes everything). Evaluation windows default per table (16 = Protocol P for the
method comparisons, 4 for the ablations; ``--max-windows`` overrides all).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time

import torch

from awq_ext.errors import AWQInputError

TABLES = ("table5", "table7", "table1", "table8", "table2", "calib_budget", "fig7")  # "all" runs them in this order
EXTRA = ("explain",)  # diagnostics: per-block AWQ vs GPTQ errors on held-out text, activation concentration
DEFAULT_WINDOWS = {"table5": 16, "table7": 16, "table1": 4, "table8": 4, "table2": 4, "calib_budget": 4, "fig7": 4, "explain": 4}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m awq_ext.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=[*TABLES, *EXTRA, "all", "summary"],
                   help="an experiment, all of them in order, or 'summary' (SUMMARY.md from the JSON files)")
    p.add_argument("--model", default=None, help="model directory, .gguf file or hub name (default: SmolLM2-135M)")
    p.add_argument("--max-windows", type=int, default=None,
                   help="evaluation windows of 1024 tokens (default: 16 for table5/table7, 4 otherwise)")
    p.add_argument("--n-samples", type=int, default=16, help="calibration sequences (default 16)")
    p.add_argument("--seqlen", type=int, default=512, help="calibration sequence length (default 512)")
    p.add_argument("--loss-samples", type=int, default=None,
                   help="calibration sequences in AWQ's scale-search loss (default: all); the search's CPU cost "
                        "scales with it")
    p.add_argument("--out", default="benchmarks/results/analysis", help="output directory")
    p.add_argument("--no-cache", action="store_true", help="recompute every row and AWQ search")
    p.add_argument("--cached-only", action="store_true",
                   help="write the tables from cached rows only (rows not yet computed show '-')")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return p


def run_experiment(name: str, runner, args) -> dict[str, str]:
    from awq_ext.analysis.runner import RunSettings

    s = RunSettings(n_samples=args.n_samples, seqlen=args.seqlen, loss_samples=args.loss_samples,
                    max_windows=args.max_windows or DEFAULT_WINDOWS[name])
    mod = importlib.import_module(f"awq_ext.analysis.{name}")
    t = time.time()
    result = mod.run(runner, s)
    paths = result.write(args.out)
    print(f"[{name}] done in {time.time() - t:.0f} s -> {paths['markdown']}", flush=True)
    print(result.markdown_table, flush=True)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from awq_ext.analysis.runner import Runner
    from awq_ext.analysis.summary import write_summary

    if args.experiment == "summary":
        print(f"wrote {write_summary(args.out)}")
        return 0

    try:
        if args.max_windows is not None and args.max_windows < 1:  # refuse before loading the model
            raise AWQInputError(f"--max-windows must be >= 1, got {args.max_windows}")
        if args.n_samples < 1 or args.seqlen < 2:
            raise AWQInputError(f"--n-samples must be >= 1 and --seqlen >= 2, got {args.n_samples}, {args.seqlen}")
        if args.loss_samples is not None and args.loss_samples < 1:
            raise AWQInputError(f"--loss-samples must be >= 1, got {args.loss_samples}")
        if args.cached_only and args.no_cache:
            raise AWQInputError("--cached-only renders the cache; it cannot be combined with --no-cache")
        runner = Runner.load(args.model, args.out, progress=args.progress, use_cache=not args.no_cache)
        runner.cached_only = args.cached_only
        names = TABLES if args.experiment == "all" else (args.experiment,)
        for n in names:
            run_experiment(n, runner, args)
        if args.experiment == "all":
            print(f"wrote {write_summary(args.out)}")
    except AWQInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
