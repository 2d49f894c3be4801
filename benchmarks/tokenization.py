r"""Caption tokenization throughput (captions/s): ours (Rust `tokenizers`) vs transformers'.

  python benchmarks/tokenization.py [--clip FOLDER] [--batch 16] [--repeats 5]

Tokenizes the 1,200 parity captions (`tests/tokenizer_corpus.py`) at max_length 38, in
batches of --batch, with both towers' tokenizers: ours (`model/tokenization.py`), and,
where transformers is installed, its slow (pure-Python) tokenizers, the ones the towers
used before, and its fast ones. CLIP reads --clip (a CLIP folder with vocab.json +
merges.txt; default: the 8,000-merge test folder), BERT the cached MiniLM folder. Prints the
median over --repeats passes. Ours encodes one caption at a time (one thread); transformers'
fast tokenizers may use several threads within a batch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from tokenizer_corpus import captions, write_clip_folder  # noqa: E402

from tgic_jax.minilm_fetch import ensure_minilm  # noqa: E402
from tgic_jax.model import tokenization  # noqa: E402


def rate(tokenize, texts: list[str], batch: int, repeats: int) -> float:
    """Median captions/s of `tokenize` over batches of `batch` captions."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(texts), batch):
            tokenize(texts[i : i + batch])
        times.append(time.perf_counter() - start)
    return len(texts) / statistics.median(times)


def main() -> None:
    """Prints one line per tower and tokenizer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default="", help="CLIP folder (vocab.json + merges.txt)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    texts = captions()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(args.clip) if args.clip else write_clip_folder(Path(tmp) / "clip")
        folders = {"clip": clip, "bert": ensure_minilm()}
        ours = {"clip": tokenization.clip_tokenizer, "bert": tokenization.bert_tokenizer}
        for tower, folder in folders.items():
            tokenizer = ours[tower](folder, 38)
            speed = rate(tokenizer, texts, args.batch, args.repeats)
            print(f"{tower:5s} {'ours (tokenizers)':40s} {speed:7.0f} captions/s")
            try:
                import transformers
            except ImportError:
                continue
            stem = {"clip": "CLIPTokenizer", "bert": "BertTokenizer"}[tower]
            for name in (stem, stem + "Fast"):
                cls = getattr(transformers, name, None)
                if cls is None:
                    continue
                theirs = cls.from_pretrained(str(folder))
                call = lambda b, t=theirs: t(
                    b, padding="max_length", max_length=38, truncation=True, return_tensors="np"
                )
                label = f"transformers {transformers.__version__} {name}"
                speed = rate(call, texts, args.batch, args.repeats)
                print(f"{tower:5s} {label:40s} {speed:7.0f} captions/s")


if __name__ == "__main__":
    main()
