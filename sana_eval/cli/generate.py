"""`sana-eval generate`: a benchmark's images in its scorer's layout, resumable."""
from __future__ import annotations

import argparse
from pathlib import Path

from sana_eval import distributed
from sana_eval.cli import checks, generation_args
from sana_eval.cli.common import add_command
from sana_eval.generation import sana
from sana_eval.generation.layouts import LayoutError, get_layout
from sana_eval.generation.prompt_sets import get_benchmark


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "generate", run=run, help="a benchmark's images in its scorer's layout (resumable)",
        examples=["sana-eval generate --benchmark geneval --weights Sana_1600M_1024px.pth --out runs/geneval",
                  "sana-eval generate --benchmark prompts:my_prompts.txt --weights ckpt_dir --out runs/mine "
                  "--limit 8 --steps 20 --cfg 4.5",
                  "sana-eval generate --benchmark geneval --weights Sana_1600M_1024px.pth "
                  "--out runs/geneval-nvlabs-rounding --kernels eager",
                  "torchrun --nproc-per-node 8 -m sana_eval generate --benchmark geneval "
                  "--weights Sana_1600M_1024px.pth --out runs/geneval"])
    bench = parser.add_argument_group("benchmark")
    bench.add_argument("--benchmark", required=True, help="mjhq30k | geneval | dpg | imagereward | prompts:FILE")
    bench.add_argument("--data", help="folder holding the official prompt files (else cache or download)")
    bench.add_argument("--limit", type=checks.positive_int, help="only the first N prompts")
    bench.add_argument("--subset", type=checks.positive_int,
                       help="N prompts keeping the benchmark's category mix, for quick comparisons "
                            "(docs/generation.md §6)")
    bench.add_argument("--shard", type=checks.shard,
                       help="i/n: this launch's share of the samples, for schedulers that start launches themselves "
                            "(torchrun spreads one launch over its processes)")
    generation_args.add_model_arguments(parser)
    generation_args.add_sampling_arguments(parser)
    generation_args.add_execution_arguments(parser)
    output = parser.add_argument_group("output")
    output.add_argument("--out", required=True, help="output folder (rerun the same command to resume)")
    output.add_argument("--layout", help="override the scorer layout (e.g. dpg-sana, mjhq-png)")
    return parser


def check(args: argparse.Namespace) -> None:
    """What the argument types cannot see alone, before any model loads or any file is written: the files and
    folders named, the prompt set (an empty file, a --limit past its end), the layout, and kernels the device
    cannot run."""
    checks.check_paths(args, {"--out": checks.output_dir, "--weights": checks.transformer_weights,
                              "--vae": checks.vae, "--text-encoder": checks.path_or_repo_id,
                              "--data": checks.existing_path})
    benchmark = get_benchmark(args.benchmark)
    if args.limit is not None and args.subset is not None:
        raise ValueError("--limit and --subset choose the prompts two ways: give one of them")
    checks.check_prompts(benchmark.load(args.data), args.benchmark, args.limit)
    if args.layout is not None:
        try:
            fits = get_layout(args.layout).name in benchmark.layouts
        except LayoutError as err:
            raise LayoutError(f"--layout: {err}") from None
        if not fits:
            raise LayoutError(f"--layout {args.layout}: {benchmark.name} is scored from "
                              f"{', '.join(benchmark.layouts)}")
    checks.check_kernels(args.device, args.kernels, args.cuda_graphs)


def run(args: argparse.Namespace) -> int:
    check(args)
    request = generation_args.generate_request(args, args.benchmark, Path(args.out))
    with distributed.launched(args.device) as world:
        summary = sana.run(request, world)
    if world.is_main:
        print(f"{summary.written} written, {summary.kept} kept of {summary.files} files in {summary.out_dir} by "
              f"{summary.world_size} process(es) ({summary.seconds:.1f} s)")
    return 0
