"""Writes tests/fixtures/towers: transformers' PyTorch towers' outputs for our Flax towers.

    pip install -e '.[torch]'   # torch + transformers' PyTorch classes
    python tools/make_tower_fixtures.py [--minilm ~/.cache/tgic_jax/minilm]

Writes (seeded: running it again gives the same numbers):
- tiny_clip/: a random tiny `CLIPModel` (config.json + model.safetensors, both towers), and
  tiny_clip.npz: token ids, masks, NHWC pixels and the expected `last_hidden_state`,
  `text_embeds`, `image_embeds`. Its eos_token_id (99) is not 2, so the end-of-text pooling
  follows the first eos token, and padding repeats eos as OpenAI's tokenizer does.
- tiny_bert/: a random tiny `BertModel` saved as pytorch_model.bin (torch's zip pickle, the
  format our torch-free reader handles) and tiny_bert.npz (ids, mask, last_hidden_state).
- minilm.npz: the real all-MiniLM-L6-v2's `last_hidden_state` on two tokenized captions
  (inputs and outputs only; the weights stay in the user's cache). Skipped, with a note,
  when the MiniLM folder is absent.
Random weights are drawn at scale 0.2 (LayerNorm scales 1 + 0.2 N): at transformers'
initializer scale (0.02) every output is nearly its bias and the test would compare little.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel, BertTokenizer, CLIPConfig, CLIPModel

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "fixtures" / "towers"
MINILM_CAPTIONS = ["a red car parked on the street", "Ein Hund läuft über die Straße 🐕"]


def _randomize(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = 0.2 * torch.randn(param.shape, generator=generator)
            is_norm_scale = ("norm" in name.lower() or "layrnorm" in name) and "weight" in name
            param.copy_(noise + 1.0 if is_norm_scale else noise)


def _f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().astype(np.float32)


def _sizes(width: int, ffn: int, layers: int, heads: int, **fields) -> dict:
    """A tiny tower's config fields, in transformers' names."""
    sizes = dict(hidden_size=width, intermediate_size=ffn, num_hidden_layers=layers)
    return dict(sizes, num_attention_heads=heads, **fields)


def make_tiny_clip(out: Path) -> None:
    """Both towers of a tiny CLIP, with eos pooling and padding masks exercised."""
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=_sizes(
            32,
            37,
            2,
            4,
            vocab_size=100,
            max_position_embeddings=16,
            bos_token_id=98,
            eos_token_id=99,
            pad_token_id=99,
        ),
        vision_config=_sizes(32, 37, 2, 4, image_size=32, patch_size=8),
        projection_dim=16,
        attn_implementation="eager",
    )
    model = CLIPModel(config).eval()
    _randomize(model, seed=1)
    folder = out / "tiny_clip"
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if "position_ids" not in k}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})

    rng = np.random.default_rng(2)
    lengths = [16, 9, 2]  # full (no padding), half, start + end only
    ids = np.full((3, 16), 99, np.int64)
    mask = np.zeros((3, 16), np.int64)
    for row, n in enumerate(lengths):
        ids[row, 0] = 98
        ids[row, 1 : n - 1] = rng.integers(0, 98, n - 2)
        mask[row, :n] = 1  # ids[row, n - 1] is the first eos; the padding repeats it
    pixels = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        text = model.text_model(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
        )
        text_embeds = model.text_projection(text.pooler_output)
        vision = model.vision_model(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2)))
        image_embeds = model.visual_projection(vision.pooler_output)
    np.savez(
        out / "tiny_clip.npz",
        input_ids=ids.astype(np.int32),
        attention_mask=mask.astype(np.int32),
        pixels_nhwc=pixels,
        last_hidden_state=_f32(text.last_hidden_state),
        text_embeds=_f32(text_embeds),
        image_embeds=_f32(image_embeds),
    )


def make_tiny_bert(out: Path) -> None:
    """A tiny BERT written as pytorch_model.bin (the torch-free pickle reader's input)."""
    torch.manual_seed(0)
    sizes = _sizes(24, 40, 2, 4, vocab_size=50, max_position_embeddings=16)
    config = BertConfig(**sizes, attn_implementation="eager")
    model = BertModel(config, add_pooling_layer=False).eval()
    _randomize(model, seed=3)
    folder = out / "tiny_bert"
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 50, (2, 12))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    with torch.no_grad():
        states = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    np.savez(
        out / "tiny_bert.npz",
        input_ids=ids.astype(np.int32),
        attention_mask=mask.astype(np.int32),
        last_hidden_state=_f32(states.last_hidden_state),
    )


def make_minilm(out: Path, folder: Path) -> None:
    """The real MiniLM's states on two captions padded to 38 tokens (no weights written)."""
    if not (folder / "model.safetensors").is_file():
        print(f"skipped minilm.npz: no MiniLM folder at {folder} (tools/fetch_minilm.py)")
        return
    tokenizer = BertTokenizer.from_pretrained(str(folder))
    tokens = tokenizer(
        MINILM_CAPTIONS, padding="max_length", max_length=38, truncation=True, return_tensors="pt"
    )
    model = BertModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    with torch.no_grad():
        states = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    np.savez(
        out / "minilm.npz",
        captions=np.array(MINILM_CAPTIONS),
        input_ids=tokens["input_ids"].numpy().astype(np.int32),
        attention_mask=tokens["attention_mask"].numpy().astype(np.int32),
        last_hidden_state=_f32(states.last_hidden_state),
    )


def main() -> None:
    """Writes every fixture into tests/fixtures/towers (or --out)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    cache = Path(os.environ.get("TGIC_CACHE", "~/.cache/tgic_jax")).expanduser()
    parser.add_argument("--minilm", type=Path, default=cache / "minilm")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    make_tiny_clip(args.out)
    make_tiny_bert(args.out)
    make_minilm(args.out, args.minilm.expanduser())
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
