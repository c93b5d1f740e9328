"""The guides: folders of Markdown pages with a ``guide.toml``, each answering its own keywords.

A guide is a folder named by its slug (``templates/guides/mlm/`` ships; ``GUIDES_DIR`` adds more and replaces a
shipped one with the same slug)::

    mlm/
      guide.toml          title, keywords, match rule, links (docs/guides.md lists every field)
      01-what-is-mlm.md   one page = one Telegram message, in the order of the file names
      02-masking.md
      hinglish/           the same file names in Hinglish; a page missing here is sent in English

A page is Markdown (``bot.guides.markdown`` turns it into Telegram HTML) and may use Jinja: ``{{ keyword }}``
(what the person commented, empty when they did not), ``{{ model_name }}``, ``{{ facts.* }}`` (the shipped
figures, ``templates/facts.j2``) and ``{{ guess("The [MASK] sat on the mat.", "🐱 label") }}``, which puts a
"Guess, then tap" button under that page that runs the sentence through the live model.

Loading never half-succeeds: :func:`load_library` returns the guides, or raises :class:`GuideProblems` with every
``FILE:LINE: problem`` it found (``mlm-bot guides check`` prints them; ``mlm-bot run`` refuses to start).
"""

from __future__ import annotations

import functools
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from bot.guides import markdown
from bot.text.telegram_html import TelegramHTMLError, visible_text
from bot.text.triggers import MATCH_RULES, detect_trigger, normalize

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SHIPPED = Path(__file__).resolve().parent.parent.parent / "templates" / "guides"
METADATA = "guide.toml"
DEFAULT_SLUG = "mlm"
SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
RESERVED_SLUGS = frozenset({"p", "all", "md", "live", "start"})  # words of the lesson's button data
LANGUAGES = ("english", "hinglish")
PAGE_TEXT_LIMIT = 1000  # characters of visible text a page may have (a phone screen or two)
MAX_PAGES = 99  # the page number travels in button data as at most two digits
RENDERED_KEPT = 64  # renderings of one guide kept (languages x keywords x the model's name)
MAX_BUTTONS = 100  # Telegram's limit for one inline keyboard
KEYWORD_LIMIT = 64
# Under any page, besides its own prompts and links: Continue, Next, Skip, Try live + Download, All at once,
# the other language, the playground.
LESSON_BUTTONS = 8

if SHIPPED.parent.name != "templates" or not SHIPPED.is_dir():  # pragma: no cover - a broken install
    import templates as _templates

    SHIPPED = Path(_templates.__file__).resolve().parent / "guides"


@dataclass(frozen=True)
class Problem:
    """Something Telegram would refuse or cut, or a guide that cannot load: ``FILE:LINE: message``."""

    file: Path
    line: int
    message: str
    warning: bool = False  # printed, but no reason to refuse the guides (a page sent in English instead)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {'warning: ' if self.warning else ''}{self.message}"


class GuideProblems(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class Prompt:
    """A "Guess, then tap" button under a page: the sentence runs through the live model."""

    sentence: str
    label: str


@dataclass(frozen=True)
class Page:
    html: str
    prompts: tuple[Prompt, ...] = ()


@dataclass(frozen=True)
class Link:
    label: str
    url: str


@dataclass(eq=False)  # compared and hashed by identity: a reloaded guide is a new one, with nothing cached
class Guide:
    slug: str
    folder: Path
    title: str
    name: str
    description: str
    keywords: tuple[str, ...]
    match: str
    languages: tuple[str, ...]
    links: tuple[Link, ...]
    gate: bool = True
    per_language: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    page_files: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)  # language -> files (with fallback)
    _environment: Callable[[str, Guide], jinja2.Environment] | None = None
    # Rendered pages by (language, model, keyword): a handful (the keywords are the creator's, not people's).
    _rendered: dict[tuple[str, str, str | None], tuple[Page, ...]] = field(default_factory=dict)

    # -- words that depend on the language ---------------------------------------------------------------------

    def language_of(self, language: str | None) -> str:
        return language if language in self.languages else "english"

    def _word(self, key: str, language: str | None) -> str:
        default = getattr(self, key)
        return str(self.per_language.get(self.language_of(language), {}).get(key, default))

    def title_in(self, language: str | None) -> str:
        return self._word("title", language)

    def name_in(self, language: str | None) -> str:
        return self._word("name", language)

    def description_in(self, language: str | None) -> str:
        return self._word("description", language)

    # -- pages --------------------------------------------------------------------------------------------------

    @property
    def page_count(self) -> int:
        return len(self.page_files["english"])

    def pages(self, language: str | None, model_name: str, keyword: str | None = None) -> tuple[Page, ...]:
        """The pages as Telegram messages, rendered once per language, model and keyword (a viral post sends them
        hundreds of times)."""
        key = (self.language_of(language), model_name, keyword)
        pages = self._rendered.get(key)
        if pages is None:
            pages = tuple(self._render(path, key[0], model_name, keyword)[1] for path in self.page_files[key[0]])
            if len(self._rendered) >= RENDERED_KEPT:
                self._rendered.clear()
            self._rendered[key] = pages
        return pages

    def markdown(self, language: str | None, model_name: str) -> str:
        """The ``.md`` download: the pages themselves, one after another."""
        language = self.language_of(language)
        sources = [self._render(p, language, model_name, None)[0].strip() for p in self.page_files[language]]
        return "\n\n".join(s for s in sources if s) + "\n"

    def code_page(self) -> int | None:
        """The first page with a code block that names its language: "Skip to the code" goes there."""
        for number, page in enumerate(self.pages("english", "x")):
            if '<pre><code class="language-' in page.html:
                return number
        return None

    def _render(self, path: Path, language: str, model_name: str, keyword: str | None) -> tuple[str, Page]:
        assert self._environment is not None
        prompts: list[Prompt] = []

        def guess(sentence: str, label: str | None = None) -> str:
            prompts.append(Prompt(str(sentence), str(label or sentence)))
            return ""

        env = self._environment(language, self)
        template = env.get_template(path.relative_to(self.folder).as_posix())
        source = template.render(
            keyword=escape_markdown(keyword) if keyword else "",
            model_name=escape_markdown(model_name),
            guess=guess,
            guide=self,
        )
        return source, Page(markdown.to_telegram_html(source), tuple(prompts))

    # -- keywords -----------------------------------------------------------------------------------------------

    def keyword_in(self, text: str | None) -> str | None:
        """The keyword (as configured) that ``text`` contains under this guide's match rule."""
        return detect_trigger(text, self.keywords, self.match)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>&])")


def escape_markdown(text: str) -> str:
    """Text put into a page by Jinja, shown as written (a model called ``my_*model*``)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


class GuideLibrary:
    """Every guide, the default (MLM) first; which one a message asks for."""

    def __init__(self, guides: Iterable[Guide], warnings: Iterable[Problem] = ()) -> None:
        ordered = sorted(guides, key=lambda g: (g.slug != DEFAULT_SLUG, g.slug))
        if not ordered:
            raise ValueError("no guides")
        self.guides: tuple[Guide, ...] = tuple(ordered)
        self.by_slug = {g.slug: g for g in self.guides}
        self.warnings = tuple(warnings)

    @property
    def default(self) -> Guide:
        return self.guides[0]

    def get(self, slug: str | None) -> Guide | None:
        return self.by_slug.get(slug) if slug else None

    def detect(self, text: str | None) -> tuple[Guide, str] | None:
        """The guide a message asks for and the keyword it used: whole-word and exact rules first, so a guide
        matching "contains bert" does not take a message that names another guide's "roberta"."""
        if not text:
            return None
        for rules in (("exact", "word"), ("contains",)):
            for guide in self.guides:
                if guide.match in rules:
                    keyword = guide.keyword_in(text)
                    if keyword is not None:
                        return guide, keyword
        return None

    def keywords(self) -> tuple[str, ...]:
        return tuple(k for g in self.guides for k in g.keywords)


# -- loading and checking ----------------------------------------------------------------------------------------


def guide_folders(extra: Path | None) -> dict[str, Path]:
    """slug -> folder: the shipped guides, then ``extra``'s (a folder of guide folders), which win by slug."""
    folders: dict[str, Path] = {}
    for root in (SHIPPED, extra):
        if root is None or not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if folder.is_dir() and (folder / METADATA).is_file():
                folders[folder.name] = folder
    return folders


def _key_line(text: str, key: str, nth: int = 0) -> int:
    """The line (1-based) of the ``nth`` ``key = ...`` in a TOML file, else 1."""
    lines = [i for i, line in enumerate(text.splitlines(), 1) if re.match(rf"\s*{re.escape(key)}\s*=", line)]
    return lines[nth] if nth < len(lines) else 1


def _read_guide(folder: Path, problems: list[Problem]) -> Guide | None:
    meta_path = folder / METADATA
    text = meta_path.read_text(encoding="utf-8", errors="replace")
    try:
        meta = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        problems.append(Problem(meta_path, int(line.group(1)) if line else 1, f"not valid TOML: {exc}"))
        return None
    before = len(problems)

    def problem(key: str, message: str, nth: int = 0) -> None:
        problems.append(Problem(meta_path, _key_line(text, key, nth), message))

    slug = folder.name
    if not SLUG.fullmatch(slug) or slug in RESERVED_SLUGS:
        problems.append(
            Problem(meta_path, 1, f"the folder name {slug!r} is the guide's slug: 1-32 of a-z 0-9 _ -, not one of "
                    f"{', '.join(sorted(RESERVED_SLUGS))}")
        )  # fmt: skip
    title = meta.get("title")
    if not isinstance(title, str) or not title.strip():
        problem("title", "title is missing: a short line naming the guide")
    keywords = meta.get("keywords")
    if not isinstance(keywords, list) or not keywords or not all(isinstance(k, str) and k.strip() for k in keywords):
        problem("keywords", 'keywords must be a list of words, like keywords = ["BERT"]')
        keywords = []
    for keyword in keywords:
        if len(keyword) > KEYWORD_LIMIT:
            problem("keywords", f"the keyword {keyword[:20]!r}... is over {KEYWORD_LIMIT} characters")
    match = meta.get("match", "word")
    if match not in MATCH_RULES:
        problem("match", f"match must be one of {', '.join(MATCH_RULES)}, not {match!r}")
    present = tuple(lang for lang in LANGUAGES[1:] if (folder / lang).is_dir())
    languages = meta.get("languages", ["english", *present])
    if not isinstance(languages, list) or "english" not in languages or set(languages) - set(LANGUAGES):
        problem("languages", f"languages must list english and any of {', '.join(LANGUAGES[1:])}")
        languages = ["english"]
    links = []
    for n, link in enumerate(meta.get("links", []) if isinstance(meta.get("links", []), list) else [None]):
        label, url = (link.get("label"), link.get("url")) if isinstance(link, dict) else (None, None)
        if not isinstance(label, str) or not label.strip() or not isinstance(url, str):
            problem("label", "each [[links]] needs a label and a url", n)
            continue
        if not markdown.allowed_url(url):
            problem("url", f"the link {url!r} is not http(s):// or tg:// (Telegram refuses other buttons)", n)
        links.append(Link(label.strip(), url.strip()))
    gate = meta.get("gate", True)
    per_language = {lang: meta[lang] for lang in LANGUAGES[1:] if isinstance(meta.get(lang), dict)}
    if len(problems) > before or not isinstance(title, str):
        return None
    name = meta.get("name") or keywords[0]
    return Guide(
        slug=slug,
        folder=folder,
        title=title.strip(),
        name=str(name),
        description=str(meta.get("description") or title).strip(),
        keywords=tuple(k.strip() for k in keywords),
        match=match,
        languages=tuple(languages),
        links=tuple(links),
        gate=bool(gate),
        per_language=per_language,
    )


def _is_page(path: Path) -> bool:
    return path.suffix == ".md" and path.is_file() and path.name.lower() != "readme.md" and path.name[0] not in "._"


def _find_pages(guide: Guide, problems: list[Problem]) -> None:
    english = tuple(sorted(p for p in guide.folder.iterdir() if _is_page(p)))
    if not english:
        problems.append(Problem(guide.folder / METADATA, 1, "no pages: add 01-first-page.md next to guide.toml"))
    if len(english) > MAX_PAGES:
        problems.append(Problem(english[MAX_PAGES], 1, f"more than {MAX_PAGES} pages"))
    files = {"english": english}
    for language in guide.languages[1:]:
        folder = guide.folder / language
        own = {p.name: p for p in sorted(folder.iterdir()) if _is_page(p)} if folder.is_dir() else {}
        names = {p.name for p in english}
        for orphan in sorted(set(own) - names):
            problems.append(Problem(own[orphan], 1, f"no English page {orphan} to go with this {language} one"))
        for page in english:
            if page.name not in own:
                problems.append(
                    Problem(folder / page.name, 1, f"missing: people reading {language} get {page.name} in English",
                            warning=True)
                )  # fmt: skip
        files[language] = tuple(own.get(p.name, p) for p in english)
    guide.page_files = files


def _jinja_location(exc: BaseException, fallback: Path) -> tuple[Path, int]:
    lineno = getattr(exc, "lineno", None)
    filename = getattr(exc, "filename", None)
    if lineno and filename:
        return Path(filename), int(lineno)
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(".md"):
            return Path(frame.filename), frame.lineno or 1
    return fallback, 1


def _check_page(guide: Guide, language: str, number: int, path: Path, problems: list[Problem]) -> None:
    """Render one page for a commenter (the longest opening) and check what Telegram would refuse or cut."""
    try:
        source, page = guide._render(path, language, "bert-base-uncased", guide.keywords[0])
    except jinja2.TemplateError as exc:
        where, line = _jinja_location(exc, path)
        problems.append(Problem(where, line, f"template error: {exc.message or exc}"))
        return
    except Exception as exc:  # a helper called wrongly: {{ guess() }}, a missing fact
        where, line = _jinja_location(exc, path)
        problems.append(Problem(where, line, f"{type(exc).__name__}: {exc}"))
        return
    try:
        text = visible_text(page.html)
    except TelegramHTMLError as exc:
        problems.append(Problem(path, 1, f"Telegram would refuse this page: {exc}"))
        return
    if not text.strip():
        problems.append(Problem(path, 1, "the page is empty"))
    if len(text) > PAGE_TEXT_LIMIT:
        problems.append(
            Problem(path, 1, f"{len(text)} characters of text: split it into two pages (at most {PAGE_TEXT_LIMIT})")
        )
    for url, line in markdown.links(source):
        if not markdown.allowed_url(url):
            problems.append(Problem(path, line + 1, f"the link {url!r} is not http(s):// or tg://: shown as text"))
    for prompt in page.prompts:
        if "[mask]" not in prompt.sentence.lower() and "<mask>" not in prompt.sentence.lower():
            problems.append(Problem(path, 1, f"guess({prompt.sentence!r}): the sentence needs a [MASK]"))
    buttons = len(page.prompts) + len(guide.links) + LESSON_BUTTONS
    if buttons > MAX_BUTTONS:
        problems.append(Problem(path, 1, f"{buttons} buttons under one page: Telegram allows {MAX_BUTTONS}"))


def load_library(
    extra: Path | None = None,
    *,
    environment: Callable[[str, Guide], jinja2.Environment],
    default_keywords: tuple[str, ...] | None = None,
    check_pages: bool = True,
) -> GuideLibrary:
    """Every guide from the shipped folder and ``extra``, each page rendered once in each language to check it.
    ``default_keywords`` (``TRIGGER_KEYWORDS``) replaces the MLM guide's keywords. Raises GuideProblems."""
    problems: list[Problem] = []
    guides: list[Guide] = []
    if extra is not None and not extra.is_dir():
        problems.append(Problem(extra, 1, "GUIDES_DIR is not a folder (mlm-bot guides new SLUG creates one)"))
    elif extra is not None:
        for folder in sorted(p for p in extra.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not (folder / METADATA).is_file():
                problems.append(Problem(folder / METADATA, 1, "missing: this folder is not a guide", warning=True))
    for slug, folder in guide_folders(extra).items():
        guide = _read_guide(folder, problems)
        if guide is None:
            continue
        if slug == DEFAULT_SLUG and default_keywords:
            guide.keywords = tuple(default_keywords)
        guide._environment = environment
        _find_pages(guide, problems)
        guides.append(guide)
    if not guides and not problems:
        problems.append(Problem(extra or SHIPPED, 1, "no guides: every guide is a folder with a guide.toml"))
    _check_keywords(guides, problems)
    if check_pages:
        for guide in guides:
            for language in guide.languages:
                for number, path in enumerate(guide.page_files.get(language, ())):
                    if language == "english" or path.parent.name == language:
                        _check_page(guide, language, number, path, problems)
    errors = [p for p in problems if not p.warning]
    if errors:
        raise GuideProblems(sorted(problems, key=lambda p: (p.warning, str(p.file), p.line)))
    return GuideLibrary(guides, [p for p in problems if p.warning])


def _check_keywords(guides: list[Guide], problems: list[Problem]) -> None:
    """A keyword may belong to one guide only (otherwise which one a comment gets would be a coin toss)."""
    owner: dict[str, tuple[Guide, str]] = {}
    for guide in guides:
        for keyword in guide.keywords:
            key = normalize(keyword).strip()
            if key in owner and owner[key][0] is not guide:
                other, word = owner[key]
                meta = guide.folder / METADATA
                other_meta = other.folder / METADATA
                line = _key_line(meta.read_text(encoding="utf-8"), "keywords")
                other_line = _key_line(other_meta.read_text(encoding="utf-8"), "keywords")
                problems.append(
                    Problem(meta, line, f"the keyword {keyword!r} is also a keyword of the guide {other.slug!r} "
                            f"({word!r} at {other_meta}:{other_line}): a keyword belongs to one guide")
                )  # fmt: skip
            owner.setdefault(key, (guide, keyword))


def page_environment(
    loader: Callable[[str], jinja2.BaseLoader], globals_: Callable[[str], Mapping[str, Any]]
) -> Callable[[str, Guide], jinja2.Environment]:
    """Jinja for pages: the guide's own folder, then the bot's templates in that language (so a page may
    ``{% import "facts.j2" as facts %}``), with the same globals (``facts``, ``g``); plain text (Markdown escapes
    itself) and unknown names an error. ``loader`` and ``globals_`` come from the bot's Renderer."""

    @functools.lru_cache(maxsize=64)
    def environment(language: str, guide: Guide) -> jinja2.Environment:
        # Sandboxed: a page can use what it is given, never reach into Python (a guide may come from a helper).
        env = SandboxedEnvironment(
            loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(guide.folder)), loader(language)]),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            autoescape=False,
        )
        env.globals.update(globals_(language))
        return env

    return environment
