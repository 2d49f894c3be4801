"""The `tgic` command as a user runs it: nothing lost, nothing half written, quiet, cached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY, synthetic_image, text_states, tiny_model

from tgic_jax import captions, image_io
from tgic_jax.cli import main as cli
from tgic_jax.evaluation import sets
from tgic_jax.train import input_pipeline

REPO = Path(__file__).resolve().parents[1]
RANDOM_TEXT = {"encoder": "random", "width": TINY.text_dim, "max_length": 38}


@pytest.fixture(autouse=True)
def _no_user_cache(monkeypatch):
    # In-process calls must not write into the user's ~/.cache (subprocess tests set their own).
    monkeypatch.setenv(cli.CACHE_ENV, "off")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny inference checkpoint whose text encoder is the test-only hash encoder."""
    from tgic_jax.checkpoints.inference import save_inference

    _, v = tiny_model(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_inference(path, TINY, v["params"], text_config=RANDOM_TEXT, tables=v["tables"])
    return path


def _tgic(*argv) -> int:
    return cli.main([str(a) for a in argv])


def _env(cache: Path | str = "off") -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", TGIC_JAX_CACHE=str(cache))


# ----------------------------------------------------------------------------- no loss
def test_inputs_sharing_a_stem_get_distinct_outputs_that_decode_back(tmp_path, ckpt, capsys):
    src = tmp_path / "in"
    src.mkdir()
    image_io.save_png(src / "photo.png", synthetic_image(32, 48, 1))
    from PIL import Image

    Image.fromarray(image_io.to_uint8(synthetic_image(40, 24, 2))).save(src / "photo.jpg")
    assert (
        _tgic("compress", src, "--caption", "a cat", "--checkpoint", ckpt, "-o", tmp_path / "b")
        == 0
    )
    captured = capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "photo_jpg.tgic",
        "photo_png.tgic",
    ]
    assert "share the name photo" in captured.err
    assert _tgic("decompress", tmp_path / "b", "--checkpoint", ckpt, "-o", tmp_path / "d") == 0
    shapes = {p.name: image_io.load_image(p)[0].shape for p in (tmp_path / "d").iterdir()}
    assert shapes == {"photo_jpg.png": (40, 24, 3), "photo_png.png": (32, 48, 3)}


def test_inputs_that_would_still_share_an_output_are_refused_before_any_work(
    tmp_path, ckpt, capsys
):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        image_io.save_png(tmp_path / sub / "x.png", synthetic_image(8, 8))
    rc = _tgic(
        "compress",
        tmp_path / "a" / "x.png",
        tmp_path / "b" / "x.png",
        "--caption",
        "c",
        "--checkpoint",
        ckpt,
        "-o",
        tmp_path / "out",
    )
    err = capsys.readouterr().err
    assert rc == 2 and "would both write" in err and "x.tgic" in err
    assert not (tmp_path / "out").exists()


def test_existing_outputs_are_kept_unless_forced(tmp_path, ckpt, capsys):
    image_io.save_png(tmp_path / "a.png", synthetic_image(16, 16))
    original = b"the user's own file"
    (tmp_path / "a.tgic").write_bytes(original)
    argv = ["compress", tmp_path / "a.png", "--caption", "c", "--checkpoint", ckpt]
    assert _tgic(*argv, "-o", tmp_path / "a.tgic") == 2
    err = capsys.readouterr().err
    assert "a.tgic exists" in err and "--force" in err
    assert (tmp_path / "a.tgic").read_bytes() == original
    # A folder target: one existing output refuses the whole run, nothing is written.
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.tgic").write_bytes(original)
    assert _tgic(*argv, "-o", tmp_path / "out") == 2
    assert (tmp_path / "out" / "a.tgic").read_bytes() == original
    assert _tgic(*argv, "-o", tmp_path / "a.tgic", "--force") == 0
    assert (tmp_path / "a.tgic").read_bytes()[:4] != original[:4]
    # decompress -o original.png keeps the user's picture.
    (tmp_path / "original.png").write_bytes(original)
    rc = _tgic(
        "decompress", tmp_path / "a.tgic", "--checkpoint", ckpt, "-o", tmp_path / "original.png"
    )
    assert rc == 2 and (tmp_path / "original.png").read_bytes() == original


def test_an_output_name_with_a_foreign_suffix_is_refused_not_made_a_folder(tmp_path, ckpt, capsys):
    image_io.save_png(tmp_path / "a.png", synthetic_image(16, 16))
    image_io.save_png(tmp_path / "b.png", synthetic_image(16, 16, 1))
    common = ["--caption", "c", "--checkpoint", ckpt]
    assert _tgic("compress", tmp_path / "a.png", *common, "-o", tmp_path / "x.jpg") == 2
    assert ".tgic" in capsys.readouterr().err and not (tmp_path / "x.jpg").exists()
    # One file named for two inputs is refused too.
    assert (
        _tgic(
            "compress", tmp_path / "a.png", tmp_path / "b.png", *common, "-o", tmp_path / "x.tgic"
        )
        == 2
    )
    assert "2 inputs" in capsys.readouterr().err and not (tmp_path / "x.tgic").exists()
    # A new folder whose name has a dot: say so with a trailing slash.
    assert _tgic("compress", tmp_path / "a.png", *common, "-o", f"{tmp_path / 'v1.2'}/") == 0
    assert (tmp_path / "v1.2" / "a.tgic").is_file()
    rc = _tgic(
        "decompress", tmp_path / "v1.2" / "a.tgic", "--checkpoint", ckpt, "-o", tmp_path / "a.jpg"
    )
    assert rc == 2 and ".png" in capsys.readouterr().err and not (tmp_path / "a.jpg").exists()


_LIMITED = textwrap.dedent(
    """
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from tgic_jax.cli import main as cli
    codes = [cli.main(line.split("\\t")) for line in sys.argv[2:]]
    print("codes", codes)
    """
)


@pytest.mark.slow  # subprocesses that compile the codec (~1 min on 2 cores)
def test_a_write_that_fails_leaves_no_file_under_the_final_name_and_keeps_the_old_one(
    tmp_path, ckpt, capsys
):
    image_io.save_png(tmp_path / "k.png", synthetic_image(64, 64, 3))
    assert (
        _tgic(
            "compress",
            tmp_path / "k.png",
            "--caption",
            "c",
            "--checkpoint",
            ckpt,
            "-o",
            tmp_path / "ref.tgic",
        )
        == 0
    )
    size = (tmp_path / "ref.tgic").stat().st_size
    assert size > 200  # well above the limit below
    old = b"an older file that must survive"
    (tmp_path / "old.tgic").write_bytes(old)
    (tmp_path / "old.png").write_bytes(old)
    compress = ["compress", tmp_path / "k.png", "--caption", "c", "--checkpoint", ckpt]
    decompress = ["decompress", tmp_path / "ref.tgic", "--checkpoint", ckpt]
    calls = [
        [*compress, "-o", tmp_path / "new.tgic"],
        [*compress, "-o", tmp_path / "old.tgic", "--force"],
        [*decompress, "-o", tmp_path / "new.png"],
        [*decompress, "-o", tmp_path / "old.png", "--force"],
    ]
    proc = subprocess.run(
        [sys.executable, "-c", _LIMITED, "100", *("\t".join(map(str, c)) for c in calls)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "codes [1, 1, 1, 1]" in proc.stdout, proc.stderr
    assert proc.stderr.count("1 of 1 failed") == 4
    assert "cannot write" in proc.stderr and "File too large" in proc.stderr
    assert not (tmp_path / "new.tgic").exists() and not (tmp_path / "new.png").exists()
    assert (tmp_path / "old.tgic").read_bytes() == old and (
        tmp_path / "old.png"
    ).read_bytes() == old
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


# ----------------------------------------------------------------------------- captions
def _coco_folder(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "imgs"
    folder.mkdir()
    image_io.save_png(folder / "a.png", synthetic_image(64, 64, 4))
    caps = {"a.png": ["a red boat on a lake", "a boat", "water", "a lake", "red"]}
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(caps))
    return folder, path


def test_a_coco_caption_file_reads_the_same_in_compress_evaluate_and_training(
    tmp_path, ckpt, capsys
):
    folder, caps = _coco_folder(tmp_path)
    common = ["--checkpoint", ckpt]
    assert (
        _tgic("compress", folder / "a.png", "--captions", caps, *common, "-o", tmp_path / "f.tgic")
        == 0
    )
    assert (
        _tgic(
            "compress",
            folder / "a.png",
            "--caption",
            "a red boat on a lake",
            *common,
            "-o",
            tmp_path / "c.tgic",
        )
        == 0
    )
    assert (
        _tgic(
            "compress",
            folder / "a.png",
            "--captions",
            caps,
            "--caption-index",
            "3",
            *common,
            "-o",
            tmp_path / "i.tgic",
        )
        == 0
    )
    assert (
        _tgic(
            "compress", folder / "a.png", "--caption", "a lake", *common, "-o", tmp_path / "l.tgic"
        )
        == 0
    )
    # The list's first caption (default) and caption 3 give exactly the bytes of those captions.
    assert (tmp_path / "f.tgic").read_bytes() == (tmp_path / "c.tgic").read_bytes()
    assert (tmp_path / "i.tgic").read_bytes() == (tmp_path / "l.tgic").read_bytes()
    assert (tmp_path / "f.tgic").read_bytes() != (tmp_path / "i.tgic").read_bytes()
    # Evaluate codes the same caption, and the same one under --caption-index.
    assert sets.folder_set(folder, caps).items[0].caption == "a red boat on a lake"
    assert sets.folder_set(folder, caps, caption_index=3).items[0].caption == "a lake"
    # Training reads all five (one drawn per example), through the same reader.
    assert input_pipeline.list_folder(folder, caps) == [
        (folder / "a.png", json.loads(caps.read_text())["a.png"])
    ]
    # An index past an image's list: an error naming the file and the entry.
    capsys.readouterr()
    rc = _tgic(
        "compress",
        folder / "a.png",
        "--captions",
        caps,
        "--caption-index",
        "5",
        *common,
        "-o",
        tmp_path / "x.tgic",
    )
    err = capsys.readouterr().err
    assert rc == 1 and "'a.png'" in err and "coco.json" in err and "1 of 1 failed" in err


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('{"a.png": 3}', ["entry 'a.png'", "got int"]),
        ('{"a.png": ["x", 2]}', ["entry 'a.png'", "not all strings"]),
        ('{"a.png": []}', ["entry 'a.png'", "empty list"]),
        ('{"a.png": "x",', ["not valid JSON", "line 1"]),
    ],
)
def test_a_bad_caption_file_is_an_error_naming_file_and_entry_everywhere(
    tmp_path, ckpt, capsys, content, words
):
    folder, caps = _coco_folder(tmp_path)
    caps.write_text(content)
    rc = _tgic(
        "compress",
        folder / "a.png",
        "--captions",
        caps,
        "--checkpoint",
        ckpt,
        "-o",
        tmp_path / "x.tgic",
    )
    err = capsys.readouterr().err
    assert rc == 2 and "coco.json" in err and all(w in err for w in words), err
    with pytest.raises(captions.CaptionsError) as training_error:
        input_pipeline.read_captions(caps)
    assert "coco.json" in str(training_error.value)
    assert all(w in str(training_error.value) for w in words)
    eval_set = sets.folder_set(folder, caps)  # evaluate records it as a failure
    assert any(all(w in e for w in words) and "coco.json" in e for e in eval_set.errors)


# ----------------------------------------------------------------------------- messages
def test_a_folder_run_says_what_it_skipped_and_how_many_failed(tmp_path, ckpt, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    image_io.save_png(src / "good.png", synthetic_image(16, 16))
    (src / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    rc = _tgic("compress", src, "--caption", "c", "--checkpoint", ckpt, "-o", tmp_path / "o")
    captured = capsys.readouterr()
    assert rc == 1
    assert "1 of 2 failed" in captured.err
    assert "1 subfolder skipped" in captured.err and "sub" in captured.err
    bad_line = next(line for line in captured.err.splitlines() if "bad.png" in line)
    assert bad_line.count("bad.png") == 1  # the path once
    assert (tmp_path / "o" / "good.tgic").is_file() and not (tmp_path / "o" / "bad.tgic").exists()


def test_bad_text_embeddings_are_an_error_naming_the_file(tmp_path, ckpt, capsys):
    image_io.save_png(tmp_path / "a.png", synthetic_image(16, 16))
    (tmp_path / "t.npy").write_bytes(b"not numpy at all")
    np.save(tmp_path / "w.npy", np.zeros((2, 3, 4, 5), np.float32))
    for name, word in (("t.npy", "not a readable .npy"), ("w.npy", "shape"), ("n.npy", "no such")):
        rc = _tgic(
            "compress",
            tmp_path / "a.png",
            "--text-embeddings",
            tmp_path / name,
            "--checkpoint",
            ckpt,
            "-o",
            tmp_path / "a.tgic",
        )
        err = capsys.readouterr().err
        assert rc == 2 and name in err and word in err, err


# ----------------------------------------------------------------------------- quiet, fast
def test_the_codec_commands_run_with_tensorflow_unimportable(tmp_path, ckpt):
    # TensorFlow is an optional extra (TFDS input): compress and decompress never need it.
    image_io.save_png(tmp_path / "a.png", synthetic_image(32, 32, 6))
    np.save(tmp_path / "t.npy", text_states())
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None;"
        "from tgic_jax.cli import main as cli;"
        "a, t, ck, out = sys.argv[1:];"
        "rc1 = cli.main(['compress', a, '--text-embeddings', t, '--checkpoint', ck, '-o', out]);"
        "rc2 = cli.main(['decompress', out, '--checkpoint', ck, '-o', out + '.png']);"
        "print(rc1, rc2, sorted(m for m in sys.modules if m.startswith(('tensorflow', 'keras'))"
        " and sys.modules[m] is not None))"
    )
    argv = [tmp_path / "a.png", tmp_path / "t.npy", ckpt, tmp_path / "a.tgic"]
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, argv)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.stdout.split("\n")[-2] == "0 0 []", proc.stdout + proc.stderr
    assert (tmp_path / "a.tgic").stat().st_size > 0
    assert image_io.load_image(tmp_path / "a.tgic.png")[0].shape == (32, 32, 3)


@pytest.mark.slow  # subprocesses that compile the codec (~1 min on 2 cores)
def test_commands_are_quiet_and_a_second_call_reuses_the_compilation_cache(tmp_path, ckpt):
    image_io.save_png(tmp_path / "a.png", synthetic_image(64, 64, 6))
    np.save(tmp_path / "t.npy", text_states())
    cache = tmp_path / "jax_cache"

    def tgic(*argv):
        return subprocess.run(
            [sys.executable, "-m", "tgic_jax.cli", *map(str, argv)],
            env=_env(cache),
            capture_output=True,
            text=True,
            timeout=600,
        )

    compress = [
        "compress",
        tmp_path / "a.png",
        "--text-embeddings",
        tmp_path / "t.npy",
        "--checkpoint",
        ckpt,
        "--force",
    ]
    first = tgic(*compress, "-o", tmp_path / "1.tgic")
    assert first.returncode == 0 and first.stderr == "", first.stderr
    assert first.stdout.count("\n") == 1 and "a.png -> " in first.stdout
    entries = len(list(cache.iterdir()))
    assert entries >= 5  # every jitted piece of the codec, however quick to compile
    second = tgic(*compress, "-o", tmp_path / "2.tgic")
    assert second.returncode == 0 and second.stderr == ""
    assert (tmp_path / "1.tgic").read_bytes() == (tmp_path / "2.tgic").read_bytes()
    assert len(list(cache.iterdir())) == entries  # nothing new compiled
    back = tgic("decompress", tmp_path / "2.tgic", "--checkpoint", ckpt, "-o", tmp_path / "b.png")
    assert back.returncode == 0 and back.stderr == "", back.stderr


def test_the_compilation_cache_lives_in_the_user_cache_folder_and_can_be_turned_off(monkeypatch):
    monkeypatch.delenv(cli.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", "/some/where")
    assert cli.compilation_cache_dir() == Path("/some/where/tgic_jax/jax_cache")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cli.compilation_cache_dir() == Path.home() / ".cache" / "tgic_jax" / "jax_cache"
    for off in ("0", "off", ""):
        monkeypatch.setenv(cli.CACHE_ENV, off)
        assert cli.compilation_cache_dir() is None
    monkeypatch.setenv(cli.CACHE_ENV, "/x/y")
    assert cli.compilation_cache_dir() == Path("/x/y")


def test_compress_imports_neither_training_nor_evaluation_code(tmp_path):
    code = (
        "import sys; from tgic_jax.cli import main as cli;"
        "cli.build_parser(cli._command_of(['compress']));"
        "print(sorted(m for m in sys.modules if m.startswith(('tgic_jax.train', 'tgic_jax.eval',"
        " 'optax', 'matplotlib', 'tensorflow'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


@pytest.mark.slow  # subprocesses that compile the codec (~1 min on 2 cores)
def test_minilm_captions_are_quiet_and_a_long_one_is_noted_as_truncated(tmp_path):
    from tgic_jax.checkpoints.inference import save_inference
    from tgic_jax.minilm_fetch import _minilm_complete, cache_root

    if not _minilm_complete(cache_root() / "minilm"):
        pytest.skip("MiniLM is not in the cache (make test fetches it)")
    from tgic_jax.model.taco import ModelConfig

    cfg = ModelConfig(N=16, M=24, slices=(2, 2, 4, 4, 12), text_dim=384, heads=8)
    from helpers import random_variables

    from tgic_jax.coding.tables import build_tables
    from tgic_jax.model.taco import TACO

    v = random_variables(TACO(cfg))
    save_inference(
        tmp_path / "ck",
        cfg,
        v["params"],
        tables=build_tables(v["params"]),
        text_config={"encoder": "minilm", "path": "", "max_length": 38},
    )
    image_io.save_png(tmp_path / "a.png", synthetic_image(16, 16))
    long_caption = " ".join(["a very long caption about a red boat"] * 10)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tgic_jax.cli",
            "compress",
            str(tmp_path / "a.png"),
            "--caption",
            long_caption,
            "--checkpoint",
            str(tmp_path / "ck"),
            "-o",
            str(tmp_path / "a.tgic"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "caption truncated" in lines[0] and "first 38" in lines[0], lines


# ----------------------------------------------------------------------------- codec commands
@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A tiny inference checkpoint that names no text encoder (captions cannot be encoded)."""
    from tgic_jax.checkpoints.inference import save_inference

    _, v = tiny_model(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_inference(path, TINY, v["params"], tables=v["tables"])
    return path


def _cli(argv):
    import argparse

    from tgic_jax.cli import codec_commands as cli_codec

    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd")
    cli_codec.add_compress_arguments(sub.add_parser("compress"))
    cli_codec.add_decompress_arguments(sub.add_parser("decompress"))
    args = p.parse_args(argv)
    return (cli_codec.run_compress if args.cmd == "compress" else cli_codec.run_decompress)(args)


def test_cli_compresses_a_folder_and_decodes_it_back(tmp_path, tiny_ckpt, capsys):
    src = tmp_path / "images"
    src.mkdir()
    for k, (h, w) in enumerate([(64, 64), (1, 1), (40, 50)]):
        image_io.save_png(src / f"im{k}.png", synthetic_image(h, w, k))
    (src / "notes.txt").write_text("not an image")
    np.save(tmp_path / "text.npy", text_states())
    rc = _cli(
        [
            "compress",
            str(src),
            "--text-embeddings",
            str(tmp_path / "text.npy"),
            "--checkpoint",
            str(tiny_ckpt),
            "-o",
            str(tmp_path / "bits"),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert out.count("bpp") == 3 and "bytes" in out and " ms" in out
    files = sorted((tmp_path / "bits").glob("*.tgic"))
    assert [f.name for f in files] == ["im0.tgic", "im1.tgic", "im2.tgic"]
    decompress = ["decompress", str(tmp_path / "bits"), "--checkpoint", str(tiny_ckpt), "-o"]
    rc = _cli([*decompress, str(tmp_path / "back")])
    assert rc == 0
    back, _ = image_io.load_image(tmp_path / "back" / "im2.png")
    assert back.shape == (40, 50, 3)
    # A damaged file: one clear line on stderr, non-zero exit, the other files still done.
    bad = tmp_path / "bits" / "im1.tgic"
    bad.write_bytes(bad.read_bytes()[:-1])
    rc = _cli([*decompress, str(tmp_path / "back2")])
    err = capsys.readouterr().err
    assert rc == 1 and "im1.tgic" in err and "checksum" in err
    assert sorted(p.name for p in (tmp_path / "back2").iterdir()) == ["im0.png", "im2.png"]


def test_cli_single_file_output_and_missing_caption_source(tmp_path, tiny_ckpt, capsys):
    image_io.save_png(tmp_path / "a.png", synthetic_image(8, 8))
    np.save(tmp_path / "t.npy", text_states())
    rc = _cli(
        [
            "compress",
            str(tmp_path / "a.png"),
            "--text-embeddings",
            str(tmp_path / "t.npy"),
            "--checkpoint",
            str(tiny_ckpt),
            "-o",
            str(tmp_path / "a.tgic"),
        ]
    )
    assert rc == 0 and (tmp_path / "a.tgic").is_file()
    # The tiny checkpoint names no text encoder: a caption cannot be encoded.
    rc = _cli(
        [
            "compress",
            str(tmp_path / "a.png"),
            "--caption",
            "a cat",
            "--checkpoint",
            str(tiny_ckpt),
            "-o",
            str(tmp_path / "b.tgic"),
        ]
    )
    assert rc == 2 and "text-embeddings" in capsys.readouterr().err


# ----------------------------------------------------------------------------- export / convert
def _tree(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


def test_export_and_convert_never_delete_a_folder_they_did_not_write_nor_the_workdir(
    tmp_path, capsys, monkeypatch
):
    # Measured: `export --out RUN` deleted the training run, `--out .` the current folder.
    run = tmp_path / "run"
    (run / "checkpoints" / "10").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's own file")
    source = tmp_path / "authors.npz"
    source.write_bytes(b"not read: refused before")
    monkeypatch.chdir(mine)
    before = _tree(tmp_path)
    refused = [
        ("export", "--workdir", run, "--out", run, "--force"),
        ("export", "--workdir", run, "--out", run / "checkpoints", "--force"),
        ("export", "--workdir", run, "--out", tmp_path, "--force"),  # holds the workdir
        ("export", "--workdir", run, "--out", ".", "--force"),  # a folder it did not write
        ("export", "--workdir", run, "--out", mine / "notes.txt"),  # a file, not forced
        ("export", "--workdir", run, "--out", mine / "notes.txt", "--format", "authors"),
        ("convert", source, mine, "--force"),
        ("convert", source, tmp_path, "--force"),  # holds the input
    ]
    for argv in refused:
        assert _tgic(*argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"tgic {argv[0]}: error: ") and err.count("\n") == 1, err
    assert _tree(tmp_path) == before


def test_an_existing_inference_checkpoint_is_replaced_only_with_force(tmp_path, capsys):
    from tgic_jax.checkpoints.inference import FORMAT

    old = tmp_path / "export"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({"format": FORMAT}))
    source = tmp_path / "authors.npz"
    source.write_bytes(b"x")
    for argv in (("export", "--workdir", tmp_path / "run", "--out", old), ("convert", source, old)):
        assert _tgic(*argv) == 2
        assert "use --force to replace it" in capsys.readouterr().err
    from tgic_jax.cli.outputs import check_output

    check_output(str(old), force=True)  # accepted: this is what export writes


def test_convert_force_keeps_the_users_files_in_the_checkpoint_folder(tmp_path, ckpt, capsys):
    import shutil

    from tgic_jax.checkpoints.inference import load_inference

    theirs = tmp_path / "theirs.npz"
    assert _tgic("export", "--format", "authors", "--workdir", ckpt, "--out", theirs) == 0
    mine = tmp_path / "mine"
    shutil.copytree(ckpt, mine)
    (mine / "NOTES.md").write_text("my notes")
    (mine / "my_results").mkdir()
    (mine / "my_results" / "r.csv").write_text("r")
    assert _tgic("convert", theirs, mine) == 2  # refused without --force, nothing touched
    assert _tgic("convert", theirs, mine, "--force") == 0
    assert "keeping NOTES.md, my_results/" in capsys.readouterr().out
    assert (mine / "NOTES.md").read_text() == "my notes"
    assert (mine / "my_results" / "r.csv").read_text() == "r"
    assert load_inference(mine)[2].extra.source == "theirs.npz"


def test_names_differing_in_case_are_two_outputs_where_the_file_system_keeps_them_apart(
    tmp_path, ckpt, capsys
):
    # Measured: Photo.PNG beside photo.png was refused as a stem collision on Linux.
    from tgic_jax.cli.codec_commands import case_sensitive

    src = tmp_path / "in"
    src.mkdir()
    image_io.save_png(src / "photo.png", synthetic_image(16, 16, 1))
    image_io.save_png(src / "Photo.PNG", synthetic_image(16, 16, 2))
    if not case_sensitive(tmp_path):
        pytest.skip("this file system ignores case: the two names are one file")
    rc = _tgic("compress", src, "--caption", "c", "--checkpoint", ckpt, "-o", tmp_path / "o")
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["Photo.tgic", "photo.tgic"]
    assert not list(tmp_path.rglob(".tgic-CaseProbe-*"))  # the probe is removed


def test_an_animated_gif_in_a_folder_is_coded_from_its_first_frame_with_a_note(
    tmp_path, ckpt, capsys
):
    # Measured: .gif files in a folder were ignored; given explicitly, coded with no note.
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    frames = [Image.fromarray(image_io.to_uint8(synthetic_image(16, 24, s))) for s in (1, 2)]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:])
    rc = _tgic("compress", src, "--caption", "c", "--checkpoint", ckpt, "-o", tmp_path / "o")
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "animation of 2 frames: the first frame is used" in err
    assert (tmp_path / "o" / "anim.tgic").is_file()
    assert [p.name for p in input_pipeline.image_io.list_images(src)] == ["anim.gif"]


def test_compress_and_evaluation_code_a_caption_with_one_coder_to_the_same_bytes(tmp_path, ckpt):
    from tgic_jax.coding.caption_coder import CaptionCoder
    from tgic_jax.evaluation import driver

    image = synthetic_image(64, 64, 3)
    image_io.save_png(tmp_path / "a.png", image)
    caption = ["--caption", "a red boat on a lake"]
    out = ["--checkpoint", str(ckpt), "-o", str(tmp_path / "a.tgic")]
    assert _cli(["compress", str(tmp_path / "a.png"), *caption, *out]) == 0
    codec = driver.load_codec(str(ckpt))
    assert isinstance(codec, CaptionCoder) and codec.label == "tiny"
    x, _ = image_io.load_image(tmp_path / "a.png")
    assert codec.encode(x, "a red boat on a lake") == (tmp_path / "a.tgic").read_bytes()
    assert codec.encode(x, "a dog") != (tmp_path / "a.tgic").read_bytes()
