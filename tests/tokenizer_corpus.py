"""The captions and the CLIP vocabulary of the tokenizer parity test (and its fixture tool).

`captions()`: 1,200 captions, the same on every run (seeded `random.Random`, whose choices
Python keeps stable): Kodak's 24, COCO-like template captions, accents and other scripts
(Greek with final sigmas, Cyrillic, CJK, Korean, Arabic), emoji, combining marks, control,
zero-width and odd spaces, heavy punctuation and contractions, and long captions that both
lengths (38, 77) cut.

`write_clip_folder(folder)`: a CLIP tokenizer folder (vocab.json + merges.txt) holding the
first 8,000 merges of CLIP's real BPE (`fixtures/tokenizers/clip_merges_8k.txt.gz`, cut
from `bpe_simple_vocab_16e6.txt.gz` as shipped in the open_clip_torch wheel), its vocabulary
built the way CLIP's SimpleTokenizer builds it: the 256 byte symbols, each again with
`</w>`, one token per merge, then the two special tokens.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
MERGES = HERE / "fixtures" / "tokenizers" / "clip_merges_8k.txt.gz"
KODAK = HERE.parent / "data" / "kodak" / "captions.json"
MAX_LENGTHS = (38, 77)


def captions_sha256(texts: list[str]) -> str:
    """The sha256 of the captions, JSON-encoded: the fixture is for these captions only."""
    return hashlib.sha256(json.dumps(texts).encode("utf-8")).hexdigest()


_DET = "a,an,the,two,three,several,many,some,A,The,Two".split(",")
_ADJ = (
    "red,small,large,old,young,wooden,white,black,striped,busy,empty,shiny,colorful,snowy,"
    "wet,tall,Brown,GREEN,half-eaten"
).split(",")
_NOUN = (
    "dog,cat,man,woman,child,bus,train,pizza,giraffe,elephant,surfer,skateboard,kitchen,"
    "bathroom,clock tower,fire hydrant,horse,laptop,umbrella,zebra,bowl of soup,stop sign,"
    "teddy bear,airplane"
).split(",")
_VERB = (
    "sitting,standing,running,parked,walking,eating,flying,lying,riding a bike,"
    "holding a kite,looking out,waiting"
).split(",")
_PREP = "on,in,next to,near,under,behind,in front of,on top of,beside".split(",")
_PLACE = (
    "the street,a table,a field,the beach,a snowy hill,the water,a city street,"
    "a grassy area,the counter,a wooden bench,the sidewalk"
).split(",")
_UNICODE = [
    "Ein Hund läuft über die Straße",
    "café au lait sur la terrasse",
    "niño con un piñata",
    "Ångström résumé naïve façade",
    "ΟΔΟΣ ΚΑΙ ΣΠΙΤΙΑ ΣΤΗΝ ΑΘΗΝΑ",
    "Ο ΣΚΥΛΟΣ ΤΡΕΧΕΙ",
    "μια γάτα στον καναπέ",
    "собака бежит по улице",
    "Москва зимой",
    "猫が好きです",
    "一只猫坐在桌子上",
    "한국어 텍스트 고양이",
    "قطة على الطاولة",
    "דג בים",
    "ñandú y pingüino",
    "e\u0301le\u0301phant combining",
    "ﬁne ligature ½ ² Ⅻ",
    "İstanbul'da bir kedi",
    "straße STRASSE Straße",
    "Çà et là, où est-ce?",
    "Ærø Øresund",
    "smörgåsbord på bordet",
]
_EMOJI = ["🐕", "🐈", "🍕", "🚌", "☕", "👍🏽", "🏳️‍🌈", "❤️", "😀😀😀", "✈️"]
_ODD = ["\t", "\n", "\u00a0", "\u2028", "\u200b", "\u0085", "\u3000", "\x07", "\ufeff", "  "]
_PUNCT = ["!", "?", "...", "…", ",", ";", ":", "—", "-", "(", ")", '"', "“", "”", "'", "’"]
_PUNCT += "& # @ % $ 1,000 3.14 9:30 2nd #1 e-mail www.x.com".split()
_CONTRACTIONS = (
    "it's don't I'm they're we've you'll he'd DON'T IT'S can't o'clock rock'n'roll"
).split()


def _coco(rng: random.Random) -> str:
    parts = [rng.choice(_DET), rng.choice(_ADJ), rng.choice(_NOUN), rng.choice(_VERB)]
    parts += [rng.choice(_PREP), rng.choice(_PLACE)]
    text = " ".join(parts)
    if rng.random() < 0.3:
        text += f" with {rng.choice(_DET).lower()} {rng.choice(_NOUN)}"
    if rng.random() < 0.3:
        text = text[0].upper() + text[1:] + "."
    return text


def _unicode(rng: random.Random) -> str:
    words = [rng.choice(_UNICODE), rng.choice(_EMOJI)] + _coco(rng).split()[:4]
    rng.shuffle(words)
    return rng.choice([" ", "  ", " \u00a0"]).join(words)


def _odd(rng: random.Random) -> str:
    words = _coco(rng).split()
    for _ in range(rng.randint(1, 3)):
        words.insert(rng.randrange(len(words) + 1), rng.choice(_ODD))
    return rng.choice(["", " "]).join(words) if rng.random() < 0.2 else " ".join(words)


def _punct(rng: random.Random) -> str:
    words = _coco(rng).split()
    for _ in range(rng.randint(1, 4)):
        words.insert(rng.randrange(len(words) + 1), rng.choice(_PUNCT + _CONTRACTIONS))
    joined = " ".join(words)
    return joined.replace(" ,", ",").replace(" !", "!") if rng.random() < 0.5 else joined


def _long(rng: random.Random) -> str:
    pieces = [rng.choice([_coco, _unicode, _punct])(rng) for _ in range(rng.randint(5, 14))]
    return rng.choice([", ", ". ", " and ", " "]).join(pieces)


def captions(n: int = 1200) -> list[str]:
    """Kodak's captions, then generated ones up to n (deterministic)."""
    out = list(json.loads(KODAK.read_text(encoding="utf-8")).values())
    out += ["", " ", "a", "A.", "<|endoftext|>", "[CLS] a [SEP] dog [MASK]", "x" * 150 + " y"]
    rng = random.Random(35)
    kinds = [_coco] * 5 + [_unicode] * 2 + [_odd, _punct, _punct, _long, _long]
    while len(out) < n:
        out.append(rng.choice(kinds)(rng))
    return out[:n]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def write_clip_folder(folder: Path) -> Path:
    """vocab.json + merges.txt of CLIP's BPE cut to its first 8,000 merges."""
    merges = gzip.decompress(MERGES.read_bytes()).decode("utf-8").splitlines()
    vocab = list(_bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(
        json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8"
    )
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", "utf-8")
    return folder
