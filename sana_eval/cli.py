"""`sana-eval`: one entry point, one subcommand per job; each is a thin call into the modules."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

EXAMPLES = """examples:
  sana-eval info Sana_1600M_1024px --json
  sana-eval info --weights Sana_1600M_1024px.pth --json
  sana-eval convert Sana_1600M_1024px.pth out/transformer --to diffusers
  sana-eval reproduce table6 --out reports
  sana-eval bench --preset Sana_600M_1024px --batch 1 16 --impl ours diffusers
"""


def _cmd_info(args: argparse.Namespace) -> int:
    from model.config import PRESETS, get_preset
    from model.transformer import count_parameters

    if args.weights:
        from model.checkpoints import describe

        info = describe(args.weights)
    elif args.preset:
        cfg = get_preset(args.preset)
        info = {"preset": args.preset, "config": dataclasses.asdict(cfg),
                "self_heads": cfg.self_heads, "ffn_hidden": cfg.ffn_hidden,
                "parameters": count_parameters(cfg)}
    else:
        info = {"presets": {name: count_parameters(cfg) for name, cfg in PRESETS.items()}}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from model.checkpoints import convert

    written = convert(args.src, args.dst, args.to)
    print(f"wrote {written}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from sana_eval.reproduce import reproduce

    for path in reproduce(args.tables, Path(args.out), version=args.version):
        print(f"wrote {path}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from sana_eval.bench import time_transformer

    for preset in args.preset:
        for batch in args.batch:
            for impl in args.impl:
                timing = time_transformer(preset, args.resolution, batch, args.dtype, impl, args.steps)
                print(json.dumps(timing.to_dict()), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sana-eval", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="a preset's config and parameter count, or a weight file's format",
                          epilog="examples:\n  sana-eval info Sana_600M_1024px --json\n"
                                 "  sana-eval info --weights model.safetensors --json",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    info.add_argument("preset", nargs="?", help="preset name (omit to list all presets)")
    info.add_argument("--weights", help="describe this checkpoint instead (file or diffusers directory)")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_cmd_info)

    convert = sub.add_parser("convert", help="rewrite a transformer checkpoint in another format, losslessly",
                             epilog="example:\n  sana-eval convert Sana_600M_1024px.pth out/transformer "
                                    "--to diffusers",
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    convert.add_argument("src", help="NVlabs .pth, diffusers directory or .safetensors file")
    convert.add_argument("dst", help="output path")
    convert.add_argument("--to", required=True, choices=["nvlabs", "diffusers", "safetensors"])
    convert.set_defaults(func=_cmd_convert)

    reproduce = sub.add_parser("reproduce", help="rerun paper tables and write versioned reports",
                               epilog="example:\n  sana-eval reproduce table6 --out reports",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    reproduce.add_argument("tables", nargs="+", help="table ids (table1 … table14) or 'all'")
    reproduce.add_argument("--out", default="reports", help="reports folder (default: reports)")
    reproduce.add_argument("--version", help="report version name (default: <UTC date>-<git sha>)")
    reproduce.set_defaults(func=_cmd_reproduce)
    bench = sub.add_parser("bench", help="time the denoising transformer on a CUDA GPU, ours and the peer",
                           epilog="example:\n  sana-eval bench --preset Sana_600M_1024px --batch 1 16 "
                                  "--impl ours diffusers",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("--preset", nargs="+", default=["Sana_600M_1024px"])
    bench.add_argument("--resolution", type=int, default=1024)
    bench.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    bench.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    bench.add_argument("--impl", nargs="+", choices=["ours", "diffusers"], default=["ours"])
    bench.add_argument("--steps", type=int, default=20)
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"sana-eval {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
