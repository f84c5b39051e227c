"""Agreement of students with their teacher, split by how well the teacher mattes each image.

    python benchmarks/agreement_by_teacher_error.py --teacher T --student S [S ...] \
        --data SPEC [--size 128] [--right 0.02] [--json]

On labeled data off the training distribution a teacher fails on some images. A student
that does not copy those failures scores a low agreement there although it may be closer
to the truth than its teacher. This splits the images by the teacher's own MAD against the
ground truth (at most `--right`: the teacher is right; above: it is wrong; the split is a
function of teacher and data only, the same for every student) and prints, per student,
the agreement with the teacher (IoU at 0.5, boundary |delta alpha|, as `evaluate
--reference` scores them) on all images and on each part, and the MAD against the truth of
teacher and student on the part where the teacher is wrong.
"""
from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool

import numpy as np  # noqa: E402

from modnet_prune import load  # noqa: E402
from modnet_prune.data import open_source  # noqa: E402
from modnet_prune.metrics import evaluate, reference_mattes  # noqa: E402


def _column(rows: list[dict], key: str, where: np.ndarray) -> float:
    values = np.array([row[key] for row in rows], np.float64)[where]
    return float(np.nanmean(values)) if values.size else float("nan")


def split_scores(teacher, students: dict, data: str, size: int, right: float) -> dict:
    source = open_source(data)
    teacher_error = np.array([r["mad"] for r in evaluate(teacher, source, size=size)["per_image"]])
    is_right = teacher_error <= right
    parts = {"all": np.ones_like(is_right), "teacher right": is_right, "teacher wrong": ~is_right}
    reference = reference_mattes(teacher, source, size=size)
    result = {"data": data, "size": size, "right": right, "images": len(source),
              "teacher right": int(is_right.sum()),
              "teacher MAD vs truth, teacher wrong": float(teacher_error[~is_right].mean())
              if (~is_right).any() else float("nan"), "students": {}}
    for name, student in students.items():
        agreement = evaluate(student, source, size=size, reference=reference)["per_image"]
        truth = evaluate(student, source, size=size)["per_image"]
        row = {f"{metric}, {part}": _column(agreement, metric, where)
               for part, where in parts.items() for metric in ("iou", "boundary")}
        row["MAD vs truth, teacher wrong"] = _column(truth, "mad", ~is_right)
        result["students"][name] = row
    return result


def markdown(result: dict) -> str:
    keys = list(next(iter(result["students"].values())))
    lines = [f"{result['data']} at {result['size']}²: teacher right (MAD vs truth ≤ "
             f"{result['right']}) on {result['teacher right']} of {result['images']} images; "
             f"where it is wrong its MAD vs truth is {result['teacher MAD vs truth, teacher wrong']:.4f}",
             "", "| student | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    lines += [f"| {name} | " + " | ".join(f"{row[k]:.4f}" for k in keys) + " |"
              for name, row in result["students"].items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", nargs="+", required=True)
    parser.add_argument("--data", required=True, help="a labeled data spec")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--right", type=float, default=0.02,
                        help="the teacher is right on an image when its MAD vs truth is at most this")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    students = {path: load(path).float().eval() for path in args.student}
    result = split_scores(load(args.teacher).float().eval(), students, args.data, args.size, args.right)
    print(json.dumps(result, indent=2) if args.json else markdown(result))


if __name__ == "__main__":
    main()
