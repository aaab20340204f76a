"""`python -m deepseek_tf.export` / `deepseek-tf export`: raw-string SavedModel or verified TFLite files."""

from __future__ import annotations

import argparse
import sys

from deepseek_tf.config import QUANT_MODES
from deepseek_tf.console import command_parser, number
from deepseek_tf.errors import UserError, cli_entry


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = command_parser(
        "export",
        "Export a trained model as a raw-string SavedModel or TFLite files.",
        [
            "deepseek-tf export --model runs/cranfield_minilm/model --format saved_model --output export/saved_model",
            "deepseek-tf export --model all-MiniLM-L6-v2 --format tflite --quantize dynamic --output export/minilm",
            "deepseek-tf export --model runs/cranfield_minilm/model --format tflite --report --dataset ../shared/data/cranfield --output export/model",  # noqa: E501 (a command to copy whole)
        ],
    )
    p.add_argument("--model", required=True, help="trained model/ dir or preset name")
    p.add_argument("--format", required=True, choices=["saved_model", "tflite"])
    p.add_argument(
        "--quantize",
        default="none",
        choices=list(QUANT_MODES),
        help="TFLite quantization: none (float32), float16, dynamic (int8 weights), "
        "int8 (int8 weights and activations, needs --dataset) (default: none)",
    )
    p.add_argument("--dataset", help="BEIR dir: texts for int8 calibration; with --report, the eval data")
    p.add_argument(
        "--output",
        required=True,
        help="directory (saved_model) or path prefix (tflite: PREFIX.query.tflite + PREFIX.doc.tflite "
        "for a dual encoder, + PREFIX.image.tflite when it reads image files, PREFIX.tflite for a "
        "cross-encoder; .json metadata beside each)",
    )
    p.add_argument(
        "--tolerance",
        type=number(float, 0),
        default=None,
        help="override the check: max abs diff (saved_model, tflite none) or min cosine "
        "(tflite float16/dynamic/int8) against the Keras model",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="tflite: export every quantization mode and write PREFIX.report.{md,json} "
        "(size, p50 latency, nDCG@10 on --dataset, cosine to float32)",
    )
    p.add_argument("--split", default="test", help="qrels split for --report (default: test)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --output even when it holds files that are not a previous export "
        "(by default only a previous export is replaced; anything else is refused)",
    )
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.format == "saved_model":
        if args.quantize != "none" or args.report:
            raise UserError("--quantize and --report apply to --format tflite only")
        from deepseek_tf.export.saved_model import export_saved_model

        meta = export_saved_model(args.model, args.output, args.tolerance or 1e-5, overwrite=args.overwrite)
        if meta.get("kind") == "cross_encoder":
            print(
                f"wrote {args.output} (cross-encoder score endpoint, max abs diff "
                f"{meta['checks']['score_max_abs_diff']:.2e} vs Keras)"
            )
            return 0
        print(
            f"wrote {args.output} (dim {meta['embedding_dim']}, max abs diff "
            f"{max(meta['checks'].values()):.2e} vs Keras)"
        )
        return 0
    if args.report:
        if not args.dataset:
            raise UserError("--report needs --dataset DIR (nDCG@10 and int8 calibration)")
        from deepseek_tf.export.quantization import quantization_report

        report = quantization_report(args.model, args.dataset, args.output, split=args.split, overwrite=args.overwrite)
        print(report["markdown"])
        print(f"wrote {args.output}.report.md and {args.output}.report.json")
        return 0
    from deepseek_tf.export.towers import export_tflite

    result = export_tflite(
        args.model, args.output, args.quantize, args.dataset, args.tolerance, overwrite=args.overwrite
    )
    for part, path in result["paths"].items():
        c = result["checks"][part]
        print(
            f"wrote {path} ({args.quantize}, {result['size_bytes'][part] / 2**20:.1f} MB; vs Keras: "
            f"{c['check']} {c['worst']:.5g}, bound {c['bound']:.5g})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
