"""A tiny BERT trained for a few seconds on a small fixed corpus, so its predictions mean something.

Random weights spread probability over the whole vocabulary (or, scaled up, pile it on arbitrary words), which
says little about how a change in precision moves a real model's answers. This model has learned its corpus:
"the cat sat on the [MASK]." is mostly "mat", with a few runners-up, like a trained model's lists. The tests
and ``benchmarks/int8_agreement.py`` measure int8 against fp32 on it. Built in about 10 s on 2 CPU cores,
deterministic for a seed, saved like a hub checkpoint and loaded back through ``from_pretrained``.
"""

from __future__ import annotations

import random
from pathlib import Path

from models.bench.random_models import wordpiece_vocab

SUBJECTS = ("the cat", "the dog", "a bird", "the child", "my friend", "the teacher", "the king", "a horse")
TEMPLATES = (
    "{s} sat on the {o}.",
    "{s} went to the {p} today.",
    "{s} likes {f} in the morning.",
    "paris is the capital of france.",
    "london is the capital of england.",
    "{s} read a {r} at night.",
    "{s} is very {a}.",
)
FILLERS = {
    "o": ("mat", "mat", "mat", "chair", "bed", "table"),
    "p": ("school", "school", "city", "river", "house"),
    "f": ("coffee", "coffee", "tea", "milk", "bread"),
    "r": ("book", "book", "letter", "story", "paper"),
    "a": ("happy", "happy", "sad", "good", "old"),
}


def corpus(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        template = rng.choice(TEMPLATES)
        out.append(
            template.format(s=rng.choice(SUBJECTS), **{k: rng.choice(v) for k, v in FILLERS.items()}).capitalize()
        )
    return out


def probe_sentences(mask: str = "[MASK]") -> list[str]:
    """A fixed set of masked sentences from the corpus's world: the words each mask stands for are learned."""
    out = []
    for subject in SUBJECTS:
        out += [
            f"{subject} sat on the {mask}.",
            f"{subject} went to the {mask} today.",
            f"{subject} likes {mask} in the morning.",
            f"{subject} read a {mask} at night.",
            f"{subject} is very {mask}.",
            f"{mask} sat on the mat.",
        ]
    out += [f"paris is the {mask} of france.", f"{mask} is the capital of england.", f"the {mask} sat on the {mask}."]
    return out


def build_trained_bert(directory: Path | str, *, steps: int = 400, seed: int = 0) -> Path:
    """Train a 2-layer BERT (hidden 64) on ``corpus`` with BERT's masking (15% of tokens, 80/10/10) and save it."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    directory = Path(directory)
    vocab = wordpiece_vocab(None, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=64)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    model = BertForMaskedLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    texts = corpus(4096, seed)
    rng = torch.Generator().manual_seed(seed)
    specials = torch.tensor(tokenizer.all_special_ids)
    model.train()
    for step in range(steps):
        batch = tokenizer(texts[(step * 64) % 4096 :][:64], return_tensors="pt", padding=True)
        ids = batch["input_ids"]
        labels = ids.clone()
        chosen = (torch.rand(ids.shape, generator=rng) < 0.15) & ~torch.isin(ids, specials)
        labels[~chosen] = -100
        roll = torch.rand(ids.shape, generator=rng)
        ids = ids.masked_fill(chosen & (roll < 0.8), tokenizer.mask_token_id)
        random_ids = torch.randint(len(vocab), ids.shape, generator=rng)
        ids = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, ids)
        loss = model(input_ids=ids, attention_mask=batch["attention_mask"], labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
