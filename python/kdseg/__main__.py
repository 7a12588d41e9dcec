"""python -m kdseg export --model CKPT --format torchscript|onnx --out FILE"""
import argparse
import sys

from .export import FORMATS, OPSET, export


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m kdseg", description="kdseg in plain PyTorch")
    sub = ap.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="write a checkpoint's network as TorchScript or ONNX",
                        description="Input image (B,4,D,H,W) float32, output logits (B,3,D,H,W) "
                        "WT, TC, ET; the plan travels in the file (TorchScript extra file "
                        "kdseg_plan.json, ONNX metadata kdseg_plan).")
    ex.add_argument("--model", required=True, help="kdseg checkpoint, e.g. runs/student/best.pt")
    ex.add_argument("--format", required=True, choices=FORMATS,
                    help="torchscript (traced) or onnx (opset %d, dynamic B/D/H/W)" % OPSET)
    ex.add_argument("--out", required=True, help="file to write, e.g. student.ts or student.onnx")
    args = ap.parse_args(argv)

    try:
        model, _ = export(args.model, args.format, args.out)
    except (ValueError, RuntimeError, OSError) as e:
        print("kdseg export: error: %s" % e, file=sys.stderr)
        return 1
    print("kdseg export: %s (%s) -> %s (%s)" % (args.model, model.arch, args.out, args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
