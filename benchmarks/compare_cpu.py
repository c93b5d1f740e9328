"""/compare on the CPU with four models of the real shapes (random weights: the hub is out of reach here).

BERT-base, RoBERTa-base, DistilBERT-base and ALBERT-base shapes with their real vocabulary sizes, so memory and
time are those of the real models; the tokenizers are the tests' small ones (tokenizing is a tiny part of a
forward). Measures what docs/features.md states: the first comparison (loading the four models from disk), then
comparisons with the models loaded (p50 over 20 sentences), and the memory the four models add.

    python benchmarks/compare_cpu.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BASE = {
    "bert": {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072, "max_position_embeddings": 512},
    "roberta": {"vocab_size": 50265, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                "intermediate_size": 3072, "max_position_embeddings": 514},
    "distilbert": {"vocab_size": 30522, "dim": 768, "n_layers": 6, "n_heads": 12, "hidden_dim": 3072,
                   "max_position_embeddings": 512},
    "albert": {"vocab_size": 30000, "embedding_size": 128, "hidden_size": 768, "num_hidden_layers": 12,
               "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512},
}  # fmt: skip


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build(kind: str, directory: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

    from models.bench.random_models import BUILDERS

    tiny = BUILDERS[kind](directory / "tiny")
    config = AutoConfig.from_pretrained(tiny)
    for key, value in BASE[kind].items():
        setattr(config, key, value)
    config.initializer_range = 0.02
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_config(config).eval()
    out = directory / "base"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    print(f"{kind}: {params / 1e6:.0f}M parameters", file=sys.stderr)
    return out


async def main() -> None:
    from bot.compare_models import ComparedModels
    from models.bench.random_models import sentences
    from models.settings import ModelSettings

    root = Path(tempfile.mkdtemp())
    dirs = [str(build(kind, root / kind)) for kind in BASE]
    compared = ComparedModels(dirs, ModelSettings(model_device="cpu", model_dtype="float32"))
    before = rss_mb()
    started = time.perf_counter()
    await compared.compare("The cat sat on the [MASK].")
    first = time.perf_counter() - started
    added = rss_mb() - before
    times = []
    for sentence in sentences(20, seed=3):
        started = time.perf_counter()
        await compared.compare(sentence)
        times.append(time.perf_counter() - started)
    await compared.close()
    p50, worst = statistics.median(times) * 1000, max(times) * 1000
    print(
        f"first comparison (loading 4 models from disk): {first:.1f} s; then p50 {p50:.0f} ms, max {worst:.0f} ms "
        f"over 20 sentences; memory added: {added:,.0f} MB ({os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    asyncio.run(main())
