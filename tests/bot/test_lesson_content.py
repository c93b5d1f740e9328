"""The lesson's content: the guide's pages (English and Hinglish, the same facts, links and code), the facts a
student would trip over (each checked where it can be), the prompts under the pages, the Markdown copy, the quiz."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from bot.text.render import LANGUAGES, Renderer
from models.engine.core import FillMaskEngine
from tests.support.chats import mlm_guide, mlm_pages
from tests.support.fake_telegram import parse_html, utf16_len


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def test_guide_messages_are_valid_and_complete(renderer: Renderer) -> None:
    pages = mlm_pages("bert-base-uncased")
    # Short pages by topic, a lesson of one page a tap: each fits a phone screen.
    assert 7 <= len(pages) <= 10
    for page in pages:
        assert utf16_len(parse_html(page)) <= 950  # 50 to spare under Telegram-friendly 1,000
    text = "\n".join(parse_html(p) for p in pages)
    for part in (
        "What is a masked language model",
        "The [MASK] sat on the mat.",
        "training objective",
        "Bidirectional",
        "question answering",
        "BERT",
        "RoBERTa",
        "ALBERT",
        "DistilBERT",
        "Summary",
        "Learn more",
        "Your turn",
    ):
        assert part in text, part
    html = "".join(pages)
    for url in (
        "https://huggingface.co/google-bert/bert-base-uncased",
        "https://huggingface.co/FacebookAI/roberta-base",
        "https://huggingface.co/albert/albert-base-v2",
        "https://huggingface.co/distilbert/distilbert-base-uncased",
        "https://arxiv.org/abs/1810.04805",
        "https://huggingface.co/docs/transformers/tasks/masked_language_modeling",
        "https://huggingface.co/docs/transformers/index",
        "https://jalammar.github.io/illustrated-bert/",
        "https://huggingface.co/learn/llm-course/chapter7/3",
    ):
        assert f'<a href="{url}">' in html
    assert "argmax of every position" in text  # the seed's mistake, named
    # The creator's voice: headings with emoji, the casual tone.
    assert "Let's go deep into it" in text
    headings = re.findall(r"^<b>(.)", "\n".join(pages), re.M)
    assert sum(ord(c) > 0x1F000 for c in headings) >= 8  # 🤔 1. What is ..., 🎭 2. How masking works ...
    assert sum(ord(c) > 0x1F000 for c in text) >= 12
    # The facts the seed got wrong, right.
    assert "less memory" in text and "not much faster" in text and "sentence-order prediction" in text  # ALBERT
    assert "no [MASK] in it (this bot adds one on purpose)" in text  # why 80/10/10 ...
    assert "never appears when the model is" not in text  # ... not "never used": this bot uses it
    assert "useful picture of every word" in text and "my dog is apple" in text  # ... the rest of the reason
    # 15% at random, never special tokens; 80/10/10 of 15% in all tokens; the architecture in one line.
    assert "picked at random, never the special ones" in text and "about 12%, 1.5% and 1.5% of all tokens" in text
    assert "encoder-only Transformer" in text and all(n in text for n in ("12 layers", "768", "110M", "340M", "3.3B"))
    # Not the only objective; the unused-weights note is on every load and names the pooler; *uncased* BERT.
    assert "core pretraining objective" in text and "BERT adds NSP, ALBERT SOP" in text
    assert "each time it loads" in text and "the pooler" in text and "on the first run" not in text
    assert "bert-base-uncased lower-cases everything; cased models exist" in text
    assert "an example of the shape, not BERT's numbers" in text  # what the pipeline prints, marked as such
    # A prompt before the reveal: page 2 never prints the sentence it asks you to guess.
    masking = parse_html(pages[1])
    assert "The cat sat on the mat." not in masking and "will BERT pick cat?" in masking
    assert "not just the missing one" in text  # the argmax of every position predicts the missing one too
    assert "up to 512 tokens" in text and "each training sentence" not in text  # masked per sequence
    assert "of BERT's score on the GLUE benchmark" in text and "a smaller student" in text  # distillation
    assert "You commented" not in text  # only for who did (a keyword)
    for line in ("Why hide words at all?", "MLM vs next-token prediction", "I went to the [MASK] to swim.",
                 "search, embeddings and classification", "NSP:", "SOP:", "dynamic masking", "factorised embeddings",
                 "some weights were not used", "lower-case words"):  # fmt: skip
        assert line in text, line
    assert "30,000 WordPiece tokens" in text and "sub-word" in text  # the vocabulary
    assert "most of it on" not in text  # no promise about what the live model will say
    # Example sentences tap-to-copy; code that fits a phone.
    assert "<code>Paris is the capital of [MASK].</code>" in html
    for block in re.findall(r"<pre>(.*?)</pre>", html, re.S):
        assert all(len(line) <= 45 for line in parse_html(block).splitlines()), block


def _lesson(pages: list[str]) -> tuple[list[str], list[str], list[str]]:
    """What must be the same in every language: the links, the code, the figures."""
    html = "".join(pages)
    prose = parse_html(re.sub(r"<pre>.*?</pre>", "", html, flags=re.S))
    figures = re.findall(r"\d[\d,.]*\s?(?:%|MB)|\b\d{1,3},\d{3}\b", prose)
    return re.findall(r'href="([^"]+)"', html), re.findall(r"<pre>.*?</pre>", html, re.S), figures


def test_the_hinglish_guide_is_the_same_lesson_in_hinglish(renderer: Renderer) -> None:
    english = mlm_pages("bert-base-uncased", language="english")
    hinglish = mlm_pages("bert-base-uncased", language="hinglish")
    # The same pages by topic, each within a phone screen or two.
    assert len(hinglish) == len(english)
    assert all(utf16_len(parse_html(page)) <= 950 for page in hinglish)
    # One source of facts and code (facts.j2), and the same links: the same ones, in the same order.
    links, code, figures = _lesson(hinglish)
    assert (links, code, figures) == _lesson(english)
    assert len(links) == 10 and len(code) == 4 and {"15%", "80%", "30,000", "440 MB"} <= set(figures)
    # In Hinglish, in the creator's voice, with the seed's facts fixed.
    text = "\n".join(parse_html(page) for page in hinglish)
    for part in (
        "Masked language model kya hai",
        "Chalo, shuru karte hain",
        "sub-word",
        "speed mein zyada fark nahi",  # ALBERT: smaller, not much faster
        "sentence-order prediction",
        "jismein [MASK] nahi hota (yeh bot jaan-boojh kar daalta hai)",  # why 80/10/10
        "core objective yahi hai",  # not the only one
        "next-sentence head aur pooler",
        "kya BERT cat chunega?",  # a prompt, not the answer
        "argmax",
        "Ab aapki baari",
    ):
        assert part in text, part
    headings = re.findall(r"^<b>(.)", "\n".join(hinglish), re.M)
    assert sum(ord(c) > 0x1F000 for c in headings) >= 8
    assert "<code>Paris is the capital of [MASK].</code>" in "".join(hinglish)
    # The calques a creator would not say, gone.
    for calque in ("chuni hui jagahon par ginte", "taraf kheenchte", "ke peeche chhupa do", "ulte hain?"):
        assert calque not in text, calque
    # No English paragraph of the English guide left untranslated.
    english_prose = parse_html(re.sub(r"<pre>.*?</pre>", "", "\n".join(english), flags=re.S))
    titles = re.findall(r"<a [^>]*>([^<]+)</a>", english[-1])  # the sources' own titles, shared on purpose
    for line in english_prose.splitlines():
        if len(line) > 40 and not any(title in line for title in titles):
            assert line not in text, line


@pytest.mark.parametrize("language", LANGUAGES)
def test_markdown_document_has_the_same_content(renderer: Renderer, language: str) -> None:
    markdown = mlm_guide().markdown(language, "bert-base-uncased")
    pages = mlm_pages("bert-base-uncased", language=language)
    html_links = set(re.findall(r'href="([^"]+)"', "".join(pages)))
    md_links = set(re.findall(r"\]\((https://[^)]+)\)", markdown))
    assert html_links == md_links and len(md_links) == 10
    assert markdown.count("```python") == 2 and "<b>" not in markdown and "&lt;" not in markdown


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_guides_code_runs_and_reads_the_mask_position(
    renderer: Renderer, bert_dir: Path, bert_engine: FillMaskEngine, language: str
) -> None:
    """Both snippets, run as printed (with the tiny model in place of bert-base-uncased), print the model's
    real top predictions for the mask, not a decoding of every position."""
    markdown = mlm_guide().markdown(language, "bert-base-uncased")
    snippets = re.findall(r"```python\n(.*?)\n```", markdown, re.S)
    assert len(snippets) == 2
    top = [p.token_str for p in bert_engine.fill("The cat sat on the [MASK].", top_k=5).masks[0]]
    for code in snippets:
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            exec(compile(code.replace("bert-base-uncased", str(bert_dir)), "guide", "exec"), {})
        printed = [line.split()[0] for line in output.getvalue().splitlines() if line.strip()]
        assert printed == top


def test_the_quiz_asks_the_same_questions_in_both_languages() -> None:
    """A person may switch language mid-quiz: the answer is checked by its position, so the positions match."""
    english, hinglish = Renderer().quiz("english"), Renderer().quiz("hinglish")
    shape = [(len(q.get("options", ())), q.get("correct"), q.get("live")) for q in english]
    assert [(len(q.get("options", ())), q.get("correct"), q.get("live")) for q in hinglish] == shape
    assert all(
        e["question"] != h["question"] and e["explanation"] != h["explanation"]
        for e, h in zip(english, hinglish, strict=True)
    )
    assert english[0]["options"][english[0]["correct"]] == hinglish[0]["options"][hinglish[0]["correct"]] == "15%"


def test_the_quiz_teaches_ideas_with_plausible_wrong_answers() -> None:
    """Each right answer is the fact the guide teaches; the wrong ones are near misses, not jokes."""
    by_start = {q["question"][:25]: q for q in Renderer().quiz("english")}
    picked = by_start["In BERT's pre-training, w"]
    assert picked["options"] == ["80%", "15%", "12%", "50%"] and picked["options"][picked["correct"]] == "15%"
    albert = by_start["What makes ALBERT smaller"]
    assert {"Fewer layers and a smaller hidden size", "A smaller vocabulary of sub-word tokens"} <= set(
        albert["options"]
    )
    assert "shared by all layers" in albert["options"][albert["correct"]] and "not much faster" in albert["explanation"]
    # bert-base-uncased gives paris about 42% (then lille, lyon)
    probability = next(q for q in by_start.values() if "paris 42%. 42% of what" in q["question"])
    assert "whole vocabulary" in probability["options"][probability["correct"]]
    roberta = by_start["Which model dropped next-"]
    assert roberta["options"][roberta["correct"]] == "RoBERTa"
    assert all(w in roberta["explanation"] for w in ("10x", "longer", "bigger batches", "DistilBERT also dropped NSP"))
    assert "only 'longer, on more data' is RoBERTa's alone" in roberta["explanation"]
    # Near misses: ELMo's two directions, ELECTRA's replaced words; and where the loss counts, and NSP.
    bidirectional = by_start["What does 'bidirectional'"]
    assert "It reads each direction separately, then joins them" in bidirectional["options"]
    assert "ELMo" in bidirectional["explanation"]
    why = by_start["Why do some picked tokens"]
    assert "To learn to spot which words were replaced" in why["options"] and "ELECTRA" in why["explanation"]
    loss = by_start["Where does BERT's MLM los"]
    assert (
        loss["options"][loss["correct"]] == "Only at the picked positions"
        and "Only at the [MASK] tokens" in loss["options"]
    )
    nsp = by_start["BERT's second task, next-"]
    assert nsp["options"][nsp["correct"]] == "Does sentence B really follow sentence A?"
    assert "Are sentences A and B in swapped order?" in nsp["options"]  # that is ALBERT's SOP
    live = [q for q in by_start.values() if "live" in q]
    assert len(live) == 1 and "[MASK]" in live[0]["live"] and "{guesses}" in live[0]["explanation"]
    assert "capital" not in live[0]["live"]  # a sentence the model is less sure of
    assert not any("bug" in o or "All of them" in o for q in by_start.values() for o in q.get("options", ()))


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_quiz_fits_telegrams_poll_limits(language: str) -> None:
    """Checked here against Telegram's numbers as well as by the fake Bot API in the end-to-end test (the live
    question's options and explanation there)."""
    questions = Renderer().quiz(language)
    assert len(questions) == 9
    fixed = [q for q in questions if "live" not in q]
    for q in questions:
        assert 1 <= len(q["question"]) <= 300
    for q in fixed:
        assert 2 <= len(q["options"]) <= 10
        assert all(1 <= len(o) <= 100 for o in q["options"]) and 0 <= q["correct"] < len(q["options"])
        assert len(q["explanation"]) <= 200 and q["explanation"].count("\n") <= 2
    assert len({q["correct"] for q in fixed}) > 1  # the right answer is not always in the same place
    # The right answer does not give itself away by its length.
    for q in fixed:
        right, wrong = q["options"][q["correct"]], [o for n, o in enumerate(q["options"]) if n != q["correct"]]
        assert len(right) <= 1.5 * max(len(o) for o in wrong), q["question"]


@pytest.mark.parametrize("language", LANGUAGES)
def test_each_prompt_sits_under_the_page_that_shows_its_sentence(language: str) -> None:
    renderer = Renderer()
    guide = mlm_guide()
    pages = guide.pages(language, "x")
    experiments = renderer.experiments()
    prompts = {number: page.prompts for number, page in enumerate(pages) if page.prompts}
    # under "How masking works", "MLM vs next-token prediction" and the last page (the bias pair)
    assert sorted(prompts) == [1, 4, len(pages) - 1]
    for number, under in prompts.items():
        for prompt in under:
            assert prompt.sentence in parse_html(pages[number].html), (number, prompt)
            assert prompt.sentence in [sentence for _, sentence in experiments]  # also a ready sentence
    code = guide.code_page()
    assert "pipeline" in parse_html(pages[code].html) and "pipeline" not in parse_html(pages[code - 1].html)
    bias = [experiments[n][1] for n in sorted(renderer.bias_experiments())]
    assert bias == ["The man worked as a [MASK].", "The woman worked as a [MASK]."]
    # The last page says "tap the pair below": the pair is under it (and its answers carry the note on bias).
    assert [p.sentence for p in prompts[len(pages) - 1]] == bias


def test_the_guides_example_word_really_splits_into_the_pieces_it_shows(bert_dir: Path) -> None:
    """WordPiece (greedy longest match) turns the example word into exactly the pieces the guide prints when they
    are in the vocabulary and the whole word is not (as in bert-base-uncased: ``em ##bed ##ding ##s``); the test
    model's own tokenizer, which lacks the word, splits it too. And the old example, ``playing``, is gone."""
    from transformers import AutoTokenizer, BertTokenizer

    facts = Renderer()._env(None).module("facts.j2")
    word, pieces = facts.split_word, list(facts.split_pieces)
    assert "".join(p.removeprefix("##") for p in pieces) == word and all(p.startswith("##") for p in pieces[1:])
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *pieces,
        "e",
        "##m",
        "##b",
        "##e",
        "##d",
        "##i",
        "##n",
        "##g",
    ]
    wordpiece = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    assert wordpiece.tokenize(word) == pieces
    assert len(AutoTokenizer.from_pretrained(bert_dir).tokenize(word)) > 1
    text = "\n".join(parse_html(p) for p in mlm_pages())
    assert " + ".join(pieces) in text and "playing" not in text
