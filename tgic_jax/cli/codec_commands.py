"""`tgic compress` and `tgic decompress`: argument wiring around a checkpoint's `CaptionCoder`.

    tgic compress IMAGE_OR_FOLDER... --caption TEXT | --captions JSON | --text-embeddings NPY
                  --checkpoint DIR -o OUT [--caption-index K] [--force]
    tgic decompress FILE_OR_FOLDER... --checkpoint DIR -o OUT [--force]

OUT is a file when there is one input and OUT ends in .tgic (.png); otherwise a folder
(an existing one, a name without a suffix, or any name ending in "/") that receives
<stem>.tgic (<stem>.png). Inputs that share a stem (photo.png, photo.jpg) get
<stem>_<suffix>.tgic each, and the run says so. Any other OUT suffix is refused.

Nothing is lost or half written: every file is written to a temporary name in its folder
and renamed when complete; existing outputs are kept (the run is refused before any work)
unless --force. One line per image on stdout: bytes, bpp, milliseconds; notes (conversions,
truncated captions, skipped subfolders) and errors on stderr. A failing image is reported
and skipped; the run ends with "N of M failed" and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


class UsageError(ValueError):
    """The command line asks for something that would lose or misplace files."""


def add_compress_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `tgic compress`."""
    p.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files or folders of images")
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--caption", help="one caption for every image")
    text.add_argument(
        "--captions",
        help="JSON file {image file name: caption or [captions]} (see tgic_jax/captions.py)",
    )
    text.add_argument(
        "--text-embeddings", help=".npy of text states [T, D] (all images) or [B, T, D] (in order)"
    )
    p.add_argument(
        "--caption-index",
        type=int,
        default=0,
        help="which caption of an image's list to use (0-based; default 0, the first)",
    )
    p.add_argument("--checkpoint", required=True, help="inference checkpoint directory")
    p.add_argument("-o", "--output", required=True, help="output .tgic file or folder")
    p.add_argument("--max-pixels", type=int, default=None, help="refuse larger images")
    p.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs")


def add_decompress_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `tgic decompress`."""
    p.add_argument("inputs", nargs="+", metavar="FILE", help=".tgic files or folders of them")
    p.add_argument("--checkpoint", required=True, help="inference checkpoint directory")
    p.add_argument("-o", "--output", required=True, help="output .png file or folder")
    p.add_argument("--max-pixels", type=int, default=None, help="refuse larger claimed sizes")
    p.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs")


# ----------------------------------------------------------------------------- paths
def expand_inputs(inputs: list[str], suffixes) -> tuple[list[Path], list[str]]:
    """-> (files, notes): folders give their files with `suffixes` (not recursive)."""
    paths, notes, seen = [], [], set()
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            entries = sorted(p.iterdir())
            subdirs = [q.name for q in entries if q.is_dir()]
            if subdirs:
                shown = ", ".join(subdirs[:3]) + (", ..." if len(subdirs) > 3 else "")
                notes.append(
                    f"{p}: {len(subdirs)} subfolder{'s' if len(subdirs) > 1 else ''} "
                    f"skipped (folders are not searched recursively): {shown}"
                )
            found = [q for q in entries if q.suffix.lower() in suffixes and q.is_file()]
        else:
            found = [p]
        for q in found:
            key = os.path.realpath(q)
            if key not in seen:  # the same file named twice is coded once
                seen.add(key)
                paths.append(q)
    return paths, notes


def case_sensitive(folder: Path) -> bool:
    """Whether file names differing only in case are distinct files in `folder` (or, when
    it does not exist yet, its nearest existing parent): a probe file, removed at once.

    False when it cannot be told (no write permission): clashing names are then kept apart.
    """
    probe_dir = Path(os.path.abspath(folder))
    while not probe_dir.is_dir() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".tgic-CaseProbe-", dir=probe_dir)
    except OSError:
        return False
    try:
        os.close(fd)
        return not os.path.exists(os.path.join(probe_dir, os.path.basename(probe).lower()))
    finally:
        os.unlink(probe)


def plan_outputs(
    paths: list[Path], output: str, suffix: str
) -> tuple[list[Path], Path | None, list[str]]:
    """-> (one distinct output per input, the folder to create or None, notes).

    Raises UsageError when OUT's suffix is neither `suffix` nor a folder, when one file is
    named for several inputs, or when two inputs would still share an output name.
    """
    out = Path(output)
    as_folder = out.is_dir() or output.endswith(("/", os.sep))
    if not as_folder and out.suffix:
        if out.suffix.lower() != suffix:
            raise UsageError(
                f"-o {output}: this command writes {suffix} files; name the output "
                f"*{suffix} or a folder (a new folder whose name has a dot: end it with /)"
            )
        if len(paths) != 1:
            raise UsageError(
                f"-o {output} names one file but there are {len(paths)} inputs: give a folder"
            )
        return [out], None, []
    names = [p.stem for p in paths]
    notes = []
    groups: dict[str, list[int]] = {}
    # a.png and A.png clash where the output's file system ignores case (macOS, Windows),
    # and are two files where it does not (Linux).
    key = (lambda n: n) if case_sensitive(out) else str.lower
    for k, name in enumerate(names):
        groups.setdefault(key(name + suffix), []).append(k)
    for members in groups.values():
        tails = [paths[k].suffix.lstrip(".").lower() for k in members]
        if len(members) > 1 and all(tails) and len(set(tails)) == len(tails):
            for k, tail in zip(members, tails, strict=True):
                names[k] = f"{paths[k].stem}_{tail}"
            notes.append(
                f"{', '.join(str(paths[k]) for k in members)} share the name "
                f"{paths[members[0]].stem}: writing "
                f"{', '.join(names[k] + suffix for k in members)}"
            )
    final: dict[str, int] = {}
    for k, name in enumerate(names):
        if key(name + suffix) in final:
            raise UsageError(
                f"{paths[final[key(name + suffix)]]} and {paths[k]} would both write "
                f"{out / (name + suffix)}: code them into different folders"
            )
        final[key(name + suffix)] = k
    return [out / (name + suffix) for name in names], out, notes


def _refuse_existing(outs: list[Path], force: bool) -> None:
    if force:
        return
    existing = [o for o in outs if o.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UsageError(f"{existing[0]} exists{more}: use --force to overwrite")


# ----------------------------------------------------------------------------- output
def _progress(items, desc: str):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", disable=len(items) < 2, file=sys.stderr)


def _say(line: str, err: bool = False) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr if err else sys.stdout)


def _error_line(command: str, path: Path, e: BaseException) -> str:
    """One line that names the file once (many errors already start with it)."""
    msg = (str(e) or type(e).__name__).splitlines()[0]
    if str(path) in msg:
        return f"tgic {command}: {msg}"
    return f"tgic {command}: {path}: {msg}"


class _Clock:
    """Seconds spent per stage, printed as one JSON line with --timings."""

    def __init__(self, args):
        self.start = getattr(args, "t_start", None) or time.perf_counter()
        self.last = self.start
        self.parts: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.parts[name] = self.parts.get(name, 0.0) + now - self.last
        self.last = now

    def add(self, name: str, seconds: float) -> None:
        self.parts[name] = self.parts.get(name, 0.0) + seconds

    def report(self, enabled: bool) -> None:
        if enabled:
            self.parts["total"] = time.perf_counter() - self.start
            print(
                "timings: " + json.dumps({k: round(v, 3) for k, v in self.parts.items()}),
                file=sys.stderr,
            )


# ----------------------------------------------------------------------------- text
class _Texts:
    """Text states per image from a caption, a captions file or precomputed embeddings."""

    def __init__(self, args, coder, paths: list[Path]):
        import numpy as np

        self.fixed = self.per_image = self.captions = None
        self.coder = coder
        self.index = int(getattr(args, "caption_index", 0) or 0)
        if self.index < 0:
            raise UsageError(f"--caption-index {self.index}: must be 0 or more")
        if args.text_embeddings:
            emb = _read_npy(args.text_embeddings)
            if emb.ndim == 2:
                self.fixed = emb
            elif emb.ndim == 3 and emb.shape[0] == len(paths):
                self.per_image = emb
            else:
                raise ValueError(
                    f"{args.text_embeddings}: text states of shape {emb.shape}: need [T, D] or "
                    f"[{len(paths)}, T, D]"
                )
            self.fixed = None if self.fixed is None else np.asarray(self.fixed, np.float32)
            return
        if args.captions:
            from tgic_jax.captions import read_captions

            self.captions = read_captions(args.captions)
            self.captions_path = args.captions
        coder.text_encoder  # noqa: B018 - built now: a missing tower fails before any image
        self.default = args.caption

    def caption(self, path: Path) -> str:
        """The caption of one image under the captions-file rule (`tgic_jax.captions`)."""
        from tgic_jax import captions as captions_lib

        if self.captions is None:
            return captions_lib.pick([self.default], self.index, path.name)
        found = captions_lib.lookup(self.captions, path.name)
        if found is None:
            raise ValueError(f"no caption for {path.name} in {self.captions_path}")
        return captions_lib.pick(found, self.index, path.name, self.captions_path)

    def __call__(self, k: int, path: Path):
        """-> (text states [T, D], notes)."""
        if self.fixed is not None:
            return self.fixed, []
        if self.per_image is not None:
            return self.per_image[k], []
        caption = self.caption(path)
        return self.coder.text_states(caption), self.coder.caption_notes(caption)


def _read_npy(path: str):
    import numpy as np

    try:
        emb = np.load(path, allow_pickle=False)
    except FileNotFoundError as e:
        raise ValueError(f"{path}: no such file") from e
    except (OSError, ValueError, EOFError) as e:
        msg = (str(e) or type(e).__name__).splitlines()[0]
        raise ValueError(f"{path}: not a readable .npy array ({msg})") from e
    if not isinstance(emb, np.ndarray) or not np.issubdtype(emb.dtype, np.number):
        raise ValueError(f"{path}: expected a numeric array, got {getattr(emb, 'dtype', emb)}")
    emb = emb.astype(np.float32)
    if not np.isfinite(emb).all():
        raise ValueError(f"{path}: text states contain NaN or infinity")
    return emb


def _write(write, out: Path, data, overwrite: bool) -> None:
    """Runs an atomic write; its errors name the output (the input is named by the caller)."""
    try:
        write(out, data, overwrite=overwrite)
    except FileExistsError:
        raise
    except OSError as e:
        raise OSError(f"cannot write {out}: {e.strerror or e}") from e


# ----------------------------------------------------------------------------- commands
def _prepare(args, command: str, suffixes, out_suffix: str):
    paths, notes = expand_inputs(args.inputs, suffixes)
    for note in notes:
        _say(f"note: {note}", err=True)
    if not paths:
        raise UsageError(f"no input {'images' if command == 'compress' else 'files'}")
    outs, folder, notes = plan_outputs(paths, args.output, out_suffix)
    for note in notes:
        _say(f"note: {note}", err=True)
    _refuse_existing(outs, args.force)
    return paths, outs, folder


def _finish(command: str, failures: int, total: int, clock: _Clock, args) -> int:
    clock.report(getattr(args, "timings", False))
    if failures:
        print(f"tgic {command}: {failures} of {total} failed", file=sys.stderr)
        return 1
    return 0


def _load_coder(args: argparse.Namespace, clock: _Clock):
    """The `CaptionCoder` of --checkpoint, timing imports and loading."""
    from tgic_jax.checkpoints import inference

    clock.lap("imports")
    coder = inference.load_caption_coder(
        args.checkpoint, program_dir=getattr(args, "program_dir", None)
    )
    clock.lap("checkpoint")
    return coder


def run_compress(args: argparse.Namespace) -> int:
    """Compresses each input image to a .tgic file; 0 if all succeeded."""
    clock = _Clock(args)
    try:
        from tgic_jax.image_io import readable_suffixes  # numpy, Pillow's registry

        paths, outs, folder = _prepare(args, "compress", readable_suffixes(), ".tgic")
        from tgic_jax import files, image_io
        from tgic_jax.coding import codec

        coder = _load_coder(args, clock)
        texts = _Texts(args, coder, paths)
        clock.lap("text encoder")
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as e:
        print(f"tgic compress: {e}".splitlines()[0], file=sys.stderr)
        return 2
    max_pixels = args.max_pixels or codec.MAX_PIXELS  # what decompress accepts
    failures = 0
    for k, (path, out) in enumerate(zip(_progress(paths, "compress"), outs, strict=True)):
        try:
            image, notes = image_io.load_image(path, max_pixels=max_pixels)
            clock.lap("read image")
            text, text_notes = texts(k, path)
            clock.lap("text")
            t0 = time.perf_counter()
            result = coder.compress(image, text=text)
            ms = 1e3 * (time.perf_counter() - t0)
            clock.lap("codec")
            _write(files.write_atomic, out, result.data, overwrite=args.force)
            clock.lap("write")
        except (OSError, ValueError) as e:
            failures += 1
            _say(_error_line("compress", path, e), err=True)
            continue
        for note in notes + text_notes:
            _say(f"{path.name}: note: {note}", err=True)
        _say(
            f"{path.name} -> {out}: {len(result.data)} bytes, {result.bpp:.4f} bpp "
            f"({result.header_bytes} header), {ms:.0f} ms"
        )
    return _finish("compress", failures, len(paths), clock, args)


def run_decompress(args: argparse.Namespace) -> int:
    """Decodes each .tgic file to a PNG; 0 if all succeeded."""
    clock = _Clock(args)
    try:
        paths, outs, folder = _prepare(args, "decompress", {".tgic"}, ".png")

        from tgic_jax import image_io
        from tgic_jax.coding import codec

        coder = _load_coder(args, clock)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as e:
        print(f"tgic decompress: {e}".splitlines()[0], file=sys.stderr)
        return 2
    max_pixels = args.max_pixels or codec.MAX_PIXELS
    failures = 0
    for path, out in zip(_progress(paths, "decompress"), outs, strict=True):
        try:
            data = path.read_bytes()
            t0 = time.perf_counter()
            image = coder.decode(data, max_pixels)
            ms = 1e3 * (time.perf_counter() - t0)
            clock.lap("codec")
            _write(image_io.save_png, out, image, overwrite=args.force)
            clock.lap("write")
        except (OSError, ValueError) as e:
            failures += 1
            _say(_error_line("decompress", path, e), err=True)
            continue
        bpp = 8.0 * len(data) / (image.shape[0] * image.shape[1])
        _say(f"{path.name} -> {out}: {len(data)} bytes, {bpp:.4f} bpp, {ms:.0f} ms")
    return _finish("decompress", failures, len(paths), clock, args)
