"""What each `sana-eval` subcommand does: thin calls into the modules, one function per subcommand."""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING
from model.config import PRESETS, get_preset
from model.transformer import count_parameters
from model.checkpoints import describe
from model.checkpoints import convert
from metrics.detectors.mmdet_convert import convert_checkpoint
from sana_eval.reproduce.run import reproduce
from model.pipeline import SamplingConfig
from sana_eval.generation.sana import GenerateRequest, run
from sana_eval.results import write_results
from sana_eval.scoring.scorers import (MJHQSource, score_dpg, score_folder, score_geneval, score_imagereward,
                             score_mjhq, score_recon)
from sana_eval.compare.report import compare_command
from sana_eval.reproduce.sweeps import run_sweep
from sana_eval.smoke.chain import run_smoke
from model.config import get_preset
from sana_eval.bench.transformer import time_dc_ae_decode, time_transformer
from sana_eval.bench.suite import run_speed_suite
from sana_eval.bench.peers import run_peer_suite
from sana_eval.bench.peer_models import PEERS
from sana_eval.bench.suite import run_text_encoder_suite
from sana_eval.bench import clock
from sana_eval.bench import e2e
from sana_eval.bench.kernels import time_linear_attention
from sana_eval.bench.text_encoders import time_text_encoder
from sana_eval.bench.transformer import time_fid_features
from sana_eval.bench.kernels import profile_transformer

if TYPE_CHECKING:
    from model.config import TransformerConfig


def cmd_info(args: argparse.Namespace) -> int:
    if args.weights:
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


def cmd_convert(args: argparse.Namespace) -> int:
    written = convert(args.src, args.dst, args.to)
    print(f"wrote {written}")
    return 0


def cmd_convert_detector(args: argparse.Namespace) -> int:
    out = convert_checkpoint(args.checkpoint, args.out, attention_heads=args.attention_heads)
    print(f"wrote {out} (use it with: sana-eval score --benchmark geneval --detector transformers "
          f"--detector-weights {out})")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    for path in reproduce(args.tables, Path(args.out), version=args.version):
        print(f"wrote {path}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    sampling = SamplingConfig(sampler=args.sampler, steps=args.steps, cfg_scale=args.cfg, shift=args.shift,
                              pag_scale=args.pag_scale, decode_tile=args.decode_tile)
    request = GenerateRequest(
        benchmark=args.benchmark, weights=args.weights, out=Path(args.out), vae=args.vae,
        text_encoder=args.text_encoder, conventions=args.conventions, sampling=sampling, chi=args.chi,
        resolution=args.resolution, seed=args.seed, limit=args.limit, batch_size=args.batch_size,
        shard=args.shard, layout=args.layout, data=args.data, device=args.device, kernels=args.kernels,
        cuda_graphs=args.cuda_graphs)
    summary = run(request)
    print(f"{summary.written} written, {summary.kept} kept of {summary.files} files in {summary.out_dir} "
          f"({summary.seconds:.1f} s); manifest {summary.manifest}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    source = MJHQSource(folder=args.mjhq, cache_dir=args.cache_dir, limit=args.limit)
    common = dict(device=args.device, cache_dir=args.cache_dir, fid_weights=args.fid_weights,
                  allow_few_images=args.allow_few_images)
    if args.benchmark != "recon" and not args.images:
        raise ValueError(f"--benchmark {args.benchmark} needs --images DIR (as sana-eval generate wrote it)")
    run = dict(device=args.device, cache_dir=args.cache_dir)
    if args.benchmark == "folder":
        results = score_folder(args.images, reference=args.reference, prompts=args.prompts,
                               metrics=args.metrics.split(","), fid_size=args.fid_size,
                               clip_weights=args.clip_weights, cross_checks=args.cross_check, **common)
    elif args.benchmark == "mjhq30k":
        results = score_mjhq(args.images, source, args.metrics.split(","), fid_size=args.fid_size, ext=args.ext,
                             clip_weights=args.clip_weights, cross_checks=args.cross_check, **common)
    elif args.benchmark == "recon":
        results = [score_recon(args.ae, args.weights, source, resolution=args.resolution, **common)]
    elif args.benchmark == "geneval":
        results = [score_geneval(args.images, detector=args.detector, detector_weights=args.detector_weights,
                                 clip_weights=args.clip_weights, limit=args.limit, data=args.data, **run)]
    elif args.benchmark == "dpg":
        results = [score_dpg(args.images, vqa=args.vqa, vqa_weights=args.vqa_weights, mode=args.dpg_mode,
                             csv=args.dpg_csv, grid=args.grid, resolution=args.tile, **run)]
    else:
        results = [score_imagereward(args.images, weights=args.weights, data=args.data, **run)]
    for result in results:
        headline = ", ".join(f"{k} {v:.4f}" for k, v in result.aggregate.items() if "/" not in k)
        print(f"{result.metric}: {headline}")
    print(f"wrote {write_results(results, args.out)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    return compare_command(Path(args.run_a), Path(args.run_b), args.fail_if_worse,
                           Path(args.out) if args.out else None, args.n_boot, args.seed,
                           require_significant=args.require_significant, device=args.device)


def cmd_sweep(args: argparse.Namespace) -> int:
    common = {k: v for k, v in {"device": args.device, "cache_dir": args.cache_dir,
                                "clip_weights": args.clip_weights}.items() if v}
    scorer = {"mjhq": {**common, **({"fid_weights": args.fid_weights} if args.fid_weights else {})},
              "geneval": {**common, **({"detector_weights": args.detector_weights} if args.detector_weights else {})}}
    path = run_sweep(args.name, args.weights, Path(args.out), limit=args.limit, resolution=args.resolution,
                     seed=args.seed, vae=args.vae, text_encoder=args.text_encoder, data=args.data, mjhq=args.mjhq,
                     fid_size=args.fid_size, allow_few_images=args.allow_few_images, batch_size=args.batch_size,
                     device=args.device, scorer=scorer)
    print(f"wrote {path}")
    return 0


def cmd_smoke(args: argparse.Namespace) -> int:
    report = run_smoke(Path(args.out), progress=True)
    print(report.read_text().splitlines()[0])
    print(f"wrote {report}")
    return 0


def _overridden(preset: str, overrides: list[str]) -> str | TransformerConfig:
    """`--set FIELD=VALUE` items applied over a preset (paper Table 8's block designs); the preset name if none.
    Each value is parsed as the type of the field it replaces."""
    if not overrides:
        return preset
    config, fields = get_preset(preset), {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not hasattr(config, key):
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with a transformer config field, e.g. "
                             f"self_attention=softmax")
        kind = type(getattr(config, key))
        if kind is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError(f"--set {item!r}: {key} takes true or false")
            fields[key] = text.lower() == "true"
            continue
        try:
            fields[key] = kind(text)
        except ValueError:
            raise ValueError(f"--set {item!r}: {key} expects {kind.__name__}") from None
    return config.replace(**fields)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.suite == "sana":
        path = run_speed_suite(args.out, args.models, args.resolutions, args.batch or [1, 16], args.dtype,
                               steps=args.steps, decode_tile=args.decode_tile, text_dtype=args.text_dtype,
                               vae_dtype=args.vae_dtype, chi_tokens=args.chi_tokens)
        print(f"wrote {path}")
        return 0
    if args.suite == "peers":
        path = run_peer_suite(args.out, args.peers or list(PEERS), args.resolutions, args.batch or [1], args.dtype,
                              timed_steps=args.timed_steps)
        print(f"wrote {path}")
        return 0
    if args.suite == "text-encoders":
        batch = (args.batch or [32])[0]
        print(f"wrote {run_text_encoder_suite(args.out, args.text_encoder, batch, args.sequence_length, args.dtype)}")
        return 0
    if args.component == "e2e":
        models = [_overridden(preset, args.overrides) for preset in args.preset]  # bad --set fails before timing
        vae = {"vae": args.vae} if args.vae else {}
        peak = clock.measure_matmul_peak(args.dtype)
        for model in models:
            for batch in args.batch or [1, 16]:
                for kernels, graphs in itertools.product(args.kernels, args.cuda_graphs):
                    timing = e2e.time_sana_e2e(model, args.resolution, batch, args.dtype, args.steps,
                                           decode_tile=args.decode_tile, text_dtype=args.text_dtype,
                                           vae_dtype=args.vae_dtype, chi_tokens=args.chi_tokens,
                                           matmul_peak_tflops=peak, kernels=kernels, cuda_graphs=graphs, **vae)
                    print(json.dumps(timing.to_dict()), flush=True)
        return 0
    if args.component == "attention":
        width = get_preset(args.preset[0]).hidden_size
        for tokens in args.tokens:
            for batch in args.batch or [1, 16]:
                for kernels in args.kernels:
                    timing = time_linear_attention(2 * batch, tokens, width, dtype=args.dtype, kernels=kernels)
                    print(json.dumps(timing.to_dict()), flush=True)
        return 0
    if args.component == "text-encoder":
        for name in args.text_encoder:
            for batch in args.batch or [32]:
                print(json.dumps(time_text_encoder(name, batch, args.sequence_length, args.dtype).to_dict()),
                      flush=True)
        return 0
    if args.component == "fid-features":
        for row in time_fid_features(args.images, args.resolution, args.fid_size):
            print(json.dumps(row.to_dict()), flush=True)
        return 0
    if args.component == "dc-ae":
        for batch in args.batch or [1, 16]:
            for impl in args.impl:
                for kernels in args.kernels if impl == "ours" else ["auto"]:
                    timing = time_dc_ae_decode(args.resolution, batch, args.dtype, impl, args.decode_tile,
                                               kernels=kernels)
                    print(json.dumps(timing.to_dict()), flush=True)
        return 0
    if args.profile:
        for preset in args.preset:
            for batch in args.batch or [1]:
                for kernels in args.kernels:
                    print(f"# {preset}, {args.resolution} px, batch {batch} (CFG: {2 * batch} rows), {args.dtype}, "
                          f"kernels {kernels}")
                    print(profile_transformer(preset, args.resolution, batch, args.dtype, kernels), flush=True)
        return 0
    for preset in args.preset:
        for batch in args.batch or [1, 16]:
            for impl in args.impl:
                ours = itertools.product(args.kernels, args.cuda_graphs)
                for kernels, graphs in ours if impl == "ours" else [("auto", "off")]:
                    timing = time_transformer(preset, args.resolution, batch, args.dtype, impl, args.steps,
                                              kernels=kernels, cuda_graphs=graphs)
                    print(json.dumps(timing.to_dict()), flush=True)
    return 0
