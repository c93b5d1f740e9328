"""The fast decoder gives exactly what the tokenizer's own ``batch_decode`` gives, with and without the clean-up
of spaces before punctuation."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from models.bench.random_models import sentences
from models.engine.decoding import Decoder


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert", "albert"])
@pytest.mark.parametrize("clean_up", [False, True])
def test_fast_decoder_equals_batch_decode(model_dirs: dict[str, Path], kind: str, clean_up: bool) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dirs[kind], clean_up_tokenization_spaces=clean_up)
    decoder = Decoder(tokenizer)
    assert decoder.fast, "the probe should tell whether this tokenizer cleans up"
    rng = random.Random(0)
    texts = [*sentences(20, seed=2, mask=tokenizer.mask_token), "it ' s a cat , isn ' t it ? yes !", "do n't ."]
    sequences = [tokenizer(t)["input_ids"] for t in texts]
    sequences += [[rng.randrange(tokenizer.vocab_size) for _ in range(12)] for _ in range(20)]  # any ids at all
    for skip in (True, False):
        assert decoder.batch_decode(sequences, skip_special_tokens=skip) == tokenizer.batch_decode(
            sequences, skip_special_tokens=skip
        )


def test_a_tokenizer_the_probe_cannot_read_keeps_the_slow_path(bert_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    tokenizer.clean_up_tokenization = lambda text: text  # the clean-up changes nothing: the probe cannot tell
    decoder = Decoder(tokenizer)
    assert not decoder.fast
    ids = [tokenizer("the cat sat .")["input_ids"]]
    assert decoder.batch_decode(ids, skip_special_tokens=True) == tokenizer.batch_decode(ids, skip_special_tokens=True)
