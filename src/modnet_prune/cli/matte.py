"""`modnet-prune matte`: alpha mattes (and cut-outs, composites) of images, folders, videos."""
from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from ..deploy.matting import SAVE_KINDS, Background, Matter, matte_files
from ..deploy.runtime import open_runtime
from ..files import check_outputs
from ..model.shipped import synthetic_teacher_note, trained_on_synthetic
from .common import add_runtime, add_threads


def register(sub) -> None:
    p = sub.add_parser("matte", help="matte images, folders and videos with a checkpoint or .onnx")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image/video files or folders")
    p.add_argument("--checkpoint", required=True, help=".ckpt/.pth/.safetensors or .onnx")
    p.add_argument("--out", required=True, help="output folder (mirrors the input tree)")
    p.add_argument("--save", default=None, metavar="KINDS",
                   help=f"comma-separated, from {','.join(SAVE_KINDS)} (default: alpha, plus "
                        "composite when --background is given); videos: alpha, composite")
    p.add_argument("--background", metavar="COLOR|IMAGE",
                   help="composite background: colour name, #hex, or an image file")
    p.add_argument("--size", type=int, default=512, metavar="REF",
                   help="reference size of the inference protocol (default 512)")
    p.add_argument("--batch", type=int, default=None,
                   help="video frames per forward (default: 1 on CPU, 8 on a GPU)")
    add_runtime(p)
    add_threads(p, help="intra-op threads")
    p.add_argument("--skip-existing", action="store_true",
                   help="skip inputs whose outputs all exist (resume an interrupted run)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.save:
        save = [kind.strip() for kind in args.save.split(",")]
    else:
        save = ["alpha", "composite"] if args.background else ["alpha"]
    # Media inputs may hold --out (their outputs are told apart from them file by file); the
    # model and a background image are inputs like any other command's.
    background_file = args.background if args.background and Path(args.background).exists() else None
    check_outputs([args.checkpoint, background_file], folders=[args.out])
    background = Background.parse(args.background) if args.background else None
    if trained_on_synthetic(args.checkpoint):  # users matte their own photos, not ours
        print(f"modnet-prune matte: {synthetic_teacher_note(args.checkpoint)}", file=sys.stderr)
    matter = Matter(open_runtime(args.checkpoint, args.runtime, args.threads), ref=args.size)

    def report(_path, message: str) -> None:  # above the progress bars, as they happen
        tqdm.write(f"modnet-prune matte: error: {message}", file=sys.stderr)

    summary = matte_files(matter, args.inputs, args.out, save=save, background=background,
                          batch=args.batch, progress=not args.no_progress,
                          skip_existing=args.skip_existing, on_error=report)
    for note in summary.notes:
        tqdm.write(f"modnet-prune matte: note: {note}", file=sys.stderr)
    parts = [f"{summary.images} images", f"{summary.frames} video frames",
             f"{len(summary.written)} files written to {args.out}"]
    if summary.skipped:
        parts.append(f"{len(summary.skipped)} skipped (outputs exist, or nothing to write)")
    if summary.failed:
        parts.append(f"{len(summary.failed)} failed")
    print(", ".join(parts), file=sys.stderr if summary.failed else sys.stdout)
    return 1 if summary.failed else 0
