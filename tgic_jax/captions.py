"""Caption files: the one reader used by `tgic compress`, `tgic evaluate` and training.

A captions file is JSON, either
- an object ``{image file name (or stem): caption}``, e.g. Kodak's
  ``{"kodim01.png": "a brick building with red doors and windows"}``, or
- a list of objects ``[{"image": "a.png", "caption": "..."}]`` ("file_name" and "captions"
  are read too).
A caption is a string or, as in MS-COCO (about 5 per image), a non-empty list of strings.

The rule for lists: coding (compress, evaluate) uses the first caption, or the one that
`--caption-index K` names (0-based; an image with fewer captions is an error for that image);
training draws one of them at random per example, as the paper's COCO training does.
Anything else (a number, an empty list, a list holding a non-string, malformed JSON) is a
`CaptionsError` that names the file and the entry.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class CaptionsError(ValueError):
    """The captions file cannot be read or one of its entries is not a caption."""


def _caption_list(value, key: str, path: Path) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    got = f"a list of {len(value)} items, not all strings" if isinstance(value, list) else None
    if isinstance(value, list) and not value:
        got = "an empty list"
    raise CaptionsError(
        f"captions JSON {path}: entry {key!r}: caption must be a string or a non-empty list "
        f"of strings, got {got or type(value).__name__}"
    )


def read_captions_and_problems(
    path: str | os.PathLike,
) -> tuple[dict[str, list[str]], list[str]]:
    """-> ({image name: [captions]}, one line per bad entry); bad entries are left out.

    Raises CaptionsError naming the file when it cannot be read, is not JSON, or is neither
    an object nor a list of objects.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise CaptionsError(f"captions JSON {path} does not exist") from err
    except IsADirectoryError as err:
        raise CaptionsError(f"captions JSON {path} is a directory") from err
    except (OSError, UnicodeDecodeError) as err:
        raise CaptionsError(f"captions JSON {path} cannot be read: {err}") from err
    except json.JSONDecodeError as err:
        raise CaptionsError(
            f"captions JSON {path} is not valid JSON (line {err.lineno}, column {err.colno}: "
            f"{err.msg})"
        ) from err
    if isinstance(data, list):
        entries = []
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise CaptionsError(f"captions JSON {path}: entry {i} is not an object")
            key = row.get("image", row.get("file_name"))
            if not isinstance(key, str):
                raise CaptionsError(f"captions JSON {path}: entry {i} has no 'image' name")
            entries.append((key, row.get("caption", row.get("captions"))))
    elif isinstance(data, dict):
        entries = list(data.items())
    else:
        raise CaptionsError(
            f"captions JSON {path} must be an object {{image name: caption}} or a list of "
            f"objects, got {type(data).__name__}"
        )
    captions, problems = {}, []
    for key, value in entries:
        try:
            captions[key] = _caption_list(value, key, path)
        except CaptionsError as err:
            problems.append(str(err))
    return captions, problems


def read_captions(path: str | os.PathLike) -> dict[str, list[str]]:
    """-> {image name: [captions]}; CaptionsError (file and entry named) on any bad entry."""
    captions, problems = read_captions_and_problems(path)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CaptionsError(problems[0] + more)
    return captions


def lookup(captions: dict[str, list[str]], file_name: str) -> list[str] | None:
    """The captions of an image by file name, else by stem; None when it has none."""
    for key in (file_name, Path(file_name).stem):
        if key in captions:
            return captions[key]
    return None


def pick(found: list[str], index: int, file_name: str, path: str | os.PathLike = "") -> str:
    """Caption number `index` (0-based) of an image's list; CaptionsError if it has fewer."""
    if not 0 <= index < len(found):
        where = f" in {path}" if path else ""
        raise CaptionsError(
            f"caption index {index} asked, but {file_name!r}{where} has {len(found)} "
            f"caption{'s' if len(found) != 1 else ''}"
        )
    return found[index]
