"""Random-weight masked LMs with working tokenizers, saved like a hub checkpoint.

The Hugging Face hub is out of reach in CI and on GPU test boxes, so the tests (tiny shapes) and the benchmark
(bert-base shape) build their models here and load them back through the product's own ``from_pretrained``
path. The vocabulary is English words plus characters, so ordinary sentences tokenize to ordinary lengths.
"""

from __future__ import annotations

import random
from pathlib import Path

from tokenizers import AddedToken, ByteLevelBPETokenizer
from transformers import (
    AlbertConfig,
    AlbertForMaskedLM,
    AlbertTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertTokenizer,
    DistilBertConfig,
    DistilBertForMaskedLM,
    DistilBertTokenizer,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaTokenizer,
)

WORDS = (
    "the a an of to in on at by for with from and or but not no is are was were be been being has have had do "
    "does did will would can could should may might must this that these those it its he she they we you i me "
    "him her them us my your his their our who what which where when why how all any some many much more most "
    "one two three first last new old good bad big small long short high low great little own other same such "
    "cat dog mat bird fish horse cow sheep mouse lion tiger bear house home room door window table chair bed "
    "car bus train road street city town country world water fire air earth sun moon star sky sea river lake "
    "tree flower grass food bread milk coffee tea apple book paper letter word name story song music film game "
    "man woman child boy girl friend mother father brother sister king queen teacher student doctor people "
    "time day night week month year morning evening today yesterday tomorrow life death love war peace money "
    "work job school class lesson language english model mask token sentence text paris london france england "
    "sat sit run ran walk walked eat ate drink read write wrote see saw look looked go went come came make made "
    "take took give gave know knew think thought say said tell told find found feel felt play played learn "
    "happy sad red blue green black white very really just also only still even again ever never always often "
    "capital predict predicted masked language learning machine neural network data computer"
).split()
PUNCTUATION = list(".,!?;:'\"()-")
LETTERS = list("abcdefghijklmnopqrstuvwxyz0123456789")


def sentences(count: int, *, seed: int = 0, masks: int = 1, words: int = 9, mask: str = "[MASK]") -> list[str]:
    """Plausible-looking sentences (about ``words`` + 3 tokens each) with ``masks`` masks in them."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        chosen = [rng.choice(WORDS) for _ in range(words)]
        for position in rng.sample(range(1, words), masks):
            chosen[position] = mask
        text = " ".join(chosen)
        out.append(text[0].upper() + text[1:] + ".")
    return out


def wordpiece_vocab(size: int | None, specials: list[str]) -> list[str]:
    vocab = specials + PUNCTUATION + LETTERS + sorted(set(WORDS) - set(LETTERS)) + ["##" + c for c in LETTERS]
    if size is not None:
        vocab += [f"word{i}" for i in range(size - len(vocab))]
    return vocab


def build_bert(
    directory: Path | str,
    *,
    vocab_size: int | None = None,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    intermediate_size: int = 64,
    max_position_embeddings: int = 64,
    seed: int = 0,
) -> Path:
    """A BERT (uncased WordPiece tokenizer). ``vocab_size=30522`` with the defaults of ``bert_base`` below gives
    the bert-base-uncased shape."""
    directory = Path(directory)
    vocab = wordpiece_vocab(vocab_size, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=max_position_embeddings)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
    )
    return _save(BertForMaskedLM, config, tokenizer, directory, seed)


def build_bert_base(directory: Path | str, *, seed: int = 0) -> Path:
    """bert-base-uncased's shape (110M parameters, 30,522-token vocabulary), random weights."""
    return build_bert(
        directory,
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
        seed=seed,
    )


def build_distilbert(directory: Path | str, *, seed: int = 0, max_position_embeddings: int = 64) -> Path:
    directory = Path(directory)
    vocab = wordpiece_vocab(None, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tokenizer = DistilBertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=max_position_embeddings)
    config = DistilBertConfig(
        vocab_size=len(vocab),
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=max_position_embeddings,
    )
    return _save(DistilBertForMaskedLM, config, tokenizer, directory, seed)


def build_roberta(directory: Path | str, *, seed: int = 0, max_length: int = 64) -> Path:
    """A RoBERTa with a byte-level BPE trained here on generated sentences; ``<mask>`` strips the space
    before it, as roberta-base's does."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = ByteLevelBPETokenizer()
    corpus = [*sentences(400, seed=seed, masks=1, mask="dog"), " ".join(WORDS)]
    bpe.train_from_iterator(corpus, vocab_size=700, min_frequency=1, special_tokens=specials)
    bpe.save_model(str(directory))
    merges = [tuple(line.split()) for line in (directory / "merges.txt").read_text().splitlines()[1:] if line]
    tokenizer = RobertaTokenizer(
        vocab=bpe.get_vocab(),
        merges=merges,
        mask_token=AddedToken("<mask>", lstrip=True, rstrip=False, special=True),
        model_max_length=max_length,
    )
    config = RobertaConfig(
        vocab_size=bpe.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_length + 2,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
    )
    return _save(RobertaForMaskedLM, config, tokenizer, directory, seed)


def build_albert(directory: Path | str, *, seed: int = 0, max_position_embeddings: int = 64) -> Path:
    """An ALBERT with a SentencePiece-style unigram vocabulary (``▁word`` pieces)."""
    directory = Path(directory)
    specials = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    pieces = [(s, 0.0) for s in specials]
    pieces += [("▁" + w, -5.0) for w in sorted(set(WORDS))]
    pieces += [("▁", -8.0)] + [(c, -10.0) for c in PUNCTUATION + LETTERS]
    tokenizer = AlbertTokenizer(vocab=pieces, model_max_length=max_position_embeddings)
    config = AlbertConfig(
        vocab_size=len(pieces),
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=0,
    )
    return _save(AlbertForMaskedLM, config, tokenizer, directory, seed)


def _save(model_cls, config, tokenizer, directory: Path, seed: int) -> Path:
    import torch

    if config.hidden_size < 256:
        # Tiny test models get large random weights, so their predictions are confident and differ a lot
        # between words: near-uniform scores would let a wrong score pass a 1e-3 comparison.
        config.initializer_range = 0.4
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


BUILDERS = {
    "bert": build_bert,
    "distilbert": build_distilbert,
    "roberta": build_roberta,
    "albert": build_albert,
    "bert-base": build_bert_base,
}
