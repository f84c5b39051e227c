"""File helpers at the bottom of the stack: atomic writes, the guard that keeps outputs off
inputs, JSON/YAML, hashes, package versions.

Every module that writes a file a user keeps goes through `write_atomic`, so an
interrupted run never leaves a half-written output under the final name; every command
passes its inputs and outputs to `check_outputs` before it writes anything.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from .errors import UserError


def sha256_file(path: str | os.PathLike, chunk: int = 2**20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


TEMP_SUFFIX = ".tmp"  # write_atomic's temp files: ".NAME.<random>.tmp" beside NAME


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, write) -> None:
    """Call write(tmp_path) on a temp file beside `path`, then rename it into place."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise UserError(f"{path.parent}: cannot write there ({e.strerror})") from e
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files `write_atomic` left in `folder` (one level) when a process was
    killed before it could clean up. Call it only while holding the folder's lock."""
    found = [p for p in Path(folder).glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for path in found:
        path.unlink(missing_ok=True)
    return found


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _inside(path: Path, folder: Path) -> bool:
    return path != folder and path.is_relative_to(folder)


def check_outputs(inputs: Iterable[str | os.PathLike | None], *,
                  files: Iterable[str | os.PathLike | None] = (),
                  folders: Iterable[str | os.PathLike | None] = (),
                  overwrite: bool = False) -> None:
    """Refuse, before anything is written, outputs that could replace an input or a file
    this run did not create.

    `inputs` are the files and folders a command reads (checkpoints, plans, recipes, data
    and calibration folders); `files` and `folders` are what it writes. An output may not
    be an input nor lie inside an input folder, and an output folder may not contain an
    input. An output file that exists is replaced only with `overwrite` (`--overwrite`);
    output folders keep their own rules (run folders resume, `matte` and `web` replace only
    what they wrote). Paths are compared resolved (symlinks followed) and by inode (hard
    links), so `m.safetensors`, `./m.safetensors` and a link to it are one file. `None`s
    are skipped.
    """
    sources = [(Path(p), _resolved(p)) for p in inputs if p]
    for out in map(Path, filter(None, files)):
        if out.is_dir():
            raise UserError(f"{out}: is a folder; give the output a file name")
        if not out.parent.is_dir():
            raise UserError(f"{out.parent}: output folder does not exist")
        _check_one(out, sources, is_folder=False)
        if out.exists() and not overwrite:
            raise UserError(f"{out}: exists; pass --overwrite to replace it, or choose "
                            "another output")
    for out in map(Path, filter(None, folders)):
        if out.exists() and not out.is_dir():
            raise UserError(f"{out}: exists and is not a folder")
        _check_one(out, sources, is_folder=True)


def _check_one(out: Path, sources: list[tuple[Path, Path]], is_folder: bool) -> None:
    target = _resolved(out)
    for given, source in sources:
        same = target == source or (out.exists() and source.exists()
                                    and os.path.samefile(out, source))
        if same:
            raise UserError(f"{out}: refusing to overwrite the input {given}; choose "
                            "another output")
        if _inside(target, source):
            raise UserError(f"{out}: lies inside the input folder {given}; choose an output "
                            "outside it")
        if is_folder and _inside(source, target):
            raise UserError(f"{out}: holds the input {given}; choose an output folder that "
                            "contains no input")


def read_yaml(path: str | os.PathLike, what: str):
    """A YAML (or JSON) file's content; unreadable, non-UTF-8, invalid files and duplicate
    keys (which YAML would resolve silently, last one winning) are one-line UserErrors."""
    import yaml

    class _Strict(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise UserError(f"{path}: duplicate key {key!r} (line "
                                    f"{key_node.start_mark.line + 1}) in the {what}")
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a {what} file")
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError as e:
        raise UserError(f"{path}: no such {what} file") from e
    except OSError as e:
        raise UserError(f"{path}: cannot read the {what} ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a text file (not UTF-8 at byte {e.start}); a {what} is "
                        "YAML or JSON text") from e
    try:
        return yaml.load(text, Loader=_Strict)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from e


def write_json(path: str | os.PathLike, obj) -> None:
    """`obj` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2) + "\n"
    write_atomic(path, lambda tmp: Path(tmp).write_text(text))


def package_version(package: str) -> str | None:
    """The installed version of `package`, None when it is not installed."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
