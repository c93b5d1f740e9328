"""Guides as files, without the bot: Markdown to Telegram HTML (checked by the fake Bot API's own parser), the
match rules, the button and deep-link grammar, loading (overrides, TRIGGER_KEYWORDS, languages) and every problem
``mlm-bot guides check`` reports as ``FILE:LINE``, with the commands' exit codes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.cli import main
from bot.guides import GuideProblems, load_library, page_environment
from bot.guides.library import SHIPPED, escape_markdown
from bot.guides.markdown import to_telegram_html
from bot.handlers.lesson import Press, parse
from bot.text.payloads import Payload, guide_payload, parse_payload, post_payload
from bot.text.render import Renderer
from tests.support.fake_telegram import parse_html
from tests.support.processes import MLM_BOT
from tests.support.telegram_rules import html_entities

RENDERER = Renderer()
ENV = page_environment(RENDERER.template_loader, RENDERER.template_globals)


def load(folder: Path | None, **kwargs):
    return load_library(folder, environment=ENV, **kwargs)


def guide(root: Path, slug: str, toml: str, pages: dict[str, str]) -> Path:
    folder = root / slug
    folder.mkdir(parents=True)
    (folder / "guide.toml").write_text(toml, encoding="utf-8")
    for name, text in pages.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


# ----------------------------------------------------------------------- Markdown


def test_markdown_becomes_the_few_tags_telegram_takes_line_for_line() -> None:
    html = to_telegram_html(
        "# Title\n\nHello **bold**, *it*, ~~old~~, `a<b>&c`, [link](https://x.org/?a=1&b=2).\nSame paragraph.\n\n"
        "- one\n- two\n    - nested\n\n3. three\n4. four\n\n```python\nif a < b and c & d:\n    pass\n```\n"
        "> quoted\n\n<b>not a tag</b> & friends\n"
    )
    text, entities = html_entities(html)
    assert text == (
        "Title\n\nHello bold, it, old, a<b>&c, link.\nSame paragraph.\n\n• one\n• two\n    ◦ nested\n\n3. three\n"
        "4. four\n\nif a < b and c & d:\n    pass\nquoted\n\n<b>not a tag</b> & friends"
    )
    kinds = [(kind, text[offset : offset + length], detail) for kind, offset, length, detail in entities]
    assert kinds == [
        ("bold", "Title", None), ("bold", "bold", None), ("italic", "it", None), ("strikethrough", "old", None),
        ("code", "a<b>&c", None), ("text_link", "link", "https://x.org/?a=1&b=2"),
        ("pre", "if a < b and c & d:\n    pass", "python"), ("blockquote", "quoted", None),
    ]  # fmt: skip


def test_only_links_telegram_accepts_become_links() -> None:
    markdown = (
        "[a](https://a.org) [b](tg://user?id=1) [c](ftp://c.org) [d](javascript:alert(1)) ![e](https://e.org/e.png)"
    )
    text, entities = html_entities(to_telegram_html(markdown))
    links = [(text[offset : offset + length], url) for _, offset, length, url in entities]
    assert links == [("a", "https://a.org"), ("b", "tg://user?id=1"), ("e", "https://e.org/e.png")]
    assert text.startswith("a b c ")  # the refused link's text stays, as text


def test_what_telegram_cannot_nest_is_flattened() -> None:
    """Code in a link, a link in a link (an image in one) and a quote in a quote: Telegram refuses those entities
    inside one another, so the inner one is its text."""
    html = to_telegram_html("[`pip` **now**](https://a.org) [![i](https://b.org)](https://c.org)\n\n> a\n> > b")
    parse_html(html)
    assert (
        html
        == '<a href="https://a.org">pip <b>now</b></a> <a href="https://c.org">i</a>\n\n<blockquote>a\nb</blockquote>'
    )


TOKENS = [*"ab <>&*_`~[]()#-+|!\\\n\t1.h:/\"'{}", "```", "http://x", "- ", "> ", "    ", "[`c`](http://x)", "> > "]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map("".join))
def test_no_markdown_makes_html_telegram_refuses(markdown: str) -> None:
    html = to_telegram_html(markdown)
    parse_html(html)  # raises on anything Telegram would refuse


def test_text_put_in_by_jinja_is_shown_as_written() -> None:
    name = "my_*model*<x>&[y](z)"
    assert parse_html(to_telegram_html(f"see what {escape_markdown(name)} says")) == f"see what {name} says"


# ----------------------------------------------------------------------- keywords, buttons, links


def test_match_rules_and_which_guide_a_message_asks_for(tmp_path: Path) -> None:
    guide(tmp_path, "bert", 'title = "B"\nkeywords = ["bert"]\nmatch = "contains"\n', {"01.md": "b"})
    guide(tmp_path, "roberta", 'title = "R"\nkeywords = ["RoBERTa"]\n', {"01.md": "r"})
    guide(tmp_path, "tokens", 'title = "T"\nkeywords = ["tokens"]\nmatch = "exact"\n', {"01.md": "t"})
    library = load(tmp_path)
    asks = lambda text: (found[0].slug, found[1]) if (found := library.detect(text)) else None  # noqa: E731
    assert asks("send ROBERTA pls") == ("roberta", "RoBERTa")  # a whole word wins over another's "contains"
    assert asks("i love distilbert") == ("bert", "bert")
    assert asks("  Tokens!! 🙏") == ("tokens", "tokens") and asks("tokens please") is None
    assert asks("#MLM") == ("mlm", "MLM") and asks("html") is None
    assert [g.slug for g in library.guides] == ["mlm", "bert", "roberta", "tokens"]  # the default first


def test_lesson_buttons_and_deep_links_round_trip_within_telegrams_limits() -> None:
    assert parse("guide") == Press(None, "start") and parse("guide:bert") == Press("bert", "start")
    assert parse("guide:bert:p:3") == Press("bert", "page", 3) and parse("guide:p:3") == Press(None, "page", 3)
    assert parse("guide:md") == Press(None, "md") and parse("guide:bert:all") == Press("bert", "all")
    assert [parse(d) for d in ("guide:bert:p:x", "guide:a:b:c:d", "gui", "guide:bert:zz")] == [None] * 4
    slug = "a" * 32
    longest = post_payload(-(10**15), 10**12 - 1, slug)
    assert len(longest) == 64 and parse_payload(longest) == Payload("post", -(10**15), 10**12 - 1, slug)
    assert parse_payload(guide_payload("bert")) == Payload("guide", guide="bert")
    assert parse_payload("mlm") == parse_payload("inline") == Payload("guide")
    assert parse_payload("p-100_5") == Payload("post", -100, 5)  # links handed out before there were slugs
    assert [parse_payload(p) for p in ("g_", "g_Bert", "p1_2_x!", "x" * 65, "g_" + "a" * 33)] == [None] * 5


# ----------------------------------------------------------------------- loading


def test_guides_dir_replaces_a_shipped_guide_and_trigger_keywords_still_set_the_mlm_ones(tmp_path: Path) -> None:
    assert load(None, default_keywords=("MLM", "masked")).default.keywords == ("MLM", "masked")
    guide(tmp_path, "mlm", 'title = "My own MLM"\nkeywords = ["MLM"]\n', {"01-only.md": "# Mine\nShort."})
    mine = load(tmp_path)
    assert (
        mine.default.title == "My own MLM" and mine.default.page_count == 1 and mine.default.folder.parent == tmp_path
    )
    assert load(None).default.folder == SHIPPED / "mlm"


def test_a_page_missing_in_hinglish_is_sent_in_english_and_said(tmp_path: Path) -> None:
    guide(tmp_path, "bert", 'title = "B"\nkeywords = ["bert"]\n', {"01.md": "One", "02.md": "Two",
                                                                  "hinglish/01.md": "Ek"})  # fmt: skip
    library = load(tmp_path)
    bert = library.get("bert")
    assert bert.languages == ("english", "hinglish")
    assert [p.html for p in bert.pages("hinglish", "m")] == ["Ek", "Two"]
    (warning,) = library.warnings
    missing = tmp_path / "bert" / "hinglish" / "02.md"
    assert str(warning) == f"{missing}:1: warning: missing: people reading hinglish get 02.md in English"


PROBLEMS = {
    "toml": ('title = "x\nkeywords = ["a"]\n', {"01.md": "a"}, "guide.toml:1: not valid TOML"),
    "title": ('keywords = ["a"]\n', {"01.md": "a"}, "guide.toml:1: title is missing"),
    "match": ('title = "x"\nkeywords = ["a"]\nmatch = "fuzzy"\n', {"01.md": "a"}, "guide.toml:3: match must be one of"),
    "keywords": ('title = "x"\n\nkeywords = []\n', {"01.md": "a"}, "guide.toml:3: keywords must be a list"),
    "link": ('title = "x"\nkeywords = ["a"]\n[[links]]\nlabel = "l"\nurl = "ftp://x"\n', {"01.md": "a"},
             "guide.toml:5: the link 'ftp://x' is not http(s)://"),
    "pages": ('title = "x"\nkeywords = ["a"]\n', {}, "guide.toml:1: no pages"),
    "jinja": ('title = "x"\nkeywords = ["a"]\n', {"01.md": "ok\n\n{{ nope( }}"}, "01.md:3: template error"),
    "name": ('title = "x"\nkeywords = ["a"]\n', {"01.md": "{{ missing_name }}"}, "01.md:1: template error: 'missing"),
    "long": ('title = "x"\nkeywords = ["a"]\n', {"01.md": "word " * 250}, "01.md:1: 1249 characters of text"),
    "guess": ('title = "x"\nkeywords = ["a"]\n', {"01.md": 'a {{ guess("no mask") }}'}, "needs a [MASK]"),
    "page link": ('title = "x"\nkeywords = ["a"]\n', {"01.md": "a\n\n[x](ftp://y)"}, "01.md:3: the link 'ftp://y'"),
    "orphan": ('title = "x"\nkeywords = ["a"]\n', {"01.md": "a", "hinglish/02.md": "b"}, "02.md:1: no English page"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(PROBLEMS))
def test_each_problem_is_named_with_its_file_and_line(tmp_path: Path, case: str) -> None:
    toml, pages, expected = PROBLEMS[case]
    folder = guide(tmp_path, "broken", toml, pages)
    with pytest.raises(GuideProblems) as refused:
        load(tmp_path)
    lines = [str(p) for p in refused.value.problems if not p.warning]
    assert any(line.startswith(str(folder)) and expected in line for line in lines), lines


def test_a_keyword_clash_names_both_files(tmp_path: Path) -> None:
    guide(tmp_path, "bert", 'title = "B"\n\nkeywords = ["BERT"]\n', {"01.md": "b"})
    guide(tmp_path, "other", 'title = "O"\nkeywords = ["x", "bert"]\n', {"01.md": "o"})
    with pytest.raises(GuideProblems) as refused:
        load(tmp_path)
    (clash,) = [str(p) for p in refused.value.problems]
    assert clash.startswith(f"{tmp_path / 'other' / 'guide.toml'}:2: the keyword 'bert'")
    assert f"{tmp_path / 'bert' / 'guide.toml'}:3" in clash


# ----------------------------------------------------------------------- the commands


def test_guides_new_list_and_check_as_a_creator_runs_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "mine"
    assert main(["guides", "new", "tokens", "--keywords", "TOKENS, tokenizer", "--dir", str(root)]) == 0
    assert sorted(p.name for p in (root / "tokens").iterdir()) == ["01-intro.md", "02-try-it.md", "guide.toml"]
    assert main(["guides", "new", "tokens", "--keywords", "other", "--dir", str(root)]) == 2  # exists
    assert main(["guides", "new", "clash", "--keywords", "mlm", "--dir", str(root)]) == 2  # the MLM guide's word
    assert main(["guides", "new", "Bad Slug!", "--keywords", "x", "--dir", str(root)]) == 2
    capsys.readouterr()
    assert main(["guides", "list", str(root)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split() == ["SLUG", "KEYWORDS", "MATCH", "PAGES", "LANGUAGES", "FOLDER"]
    assert listing[2].split() == ["tokens", "TOKENS,", "tokenizer", "word", "2", "english", str(root / "tokens")]
    assert main(["guides", "check", str(root)]) == 0
    assert capsys.readouterr().out.strip().endswith("2 guides, 20 pages checked (shipped, and " + str(root) + "): ok")

    (root / "tokens" / "02-try-it.md").write_text("## 2\n\n{% if %}\n")
    assert main(["guides", "check", str(root)]) == 1
    assert f"{root / 'tokens' / '02-try-it.md'}:3: template error" in capsys.readouterr().out


def test_run_refuses_to_start_on_a_broken_guide_with_the_same_lines(tmp_path: Path) -> None:
    root = tmp_path / "guides"
    guide(root, "bert", 'title = "B"\nkeywords = ["MLM"]\n', {"01.md": "b"})
    env = {"PATH": str(Path(MLM_BOT).parent), "TELEGRAM_BOT_TOKEN": "123456:" + "A" * 35, "GUIDES_DIR": str(root),
           "HOME": str(tmp_path)}  # fmt: skip
    done = subprocess.run([MLM_BOT, "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"{root / 'bert' / 'guide.toml'}:2: the keyword 'MLM' is also a keyword of the guide 'mlm'" in done.stderr
    assert "Traceback" not in done.stderr
