"""Where training examples come from, and the recorded train / held-out split.

Pretraining reads a corpus of documents (by default the text in the benchmark data
folder: SQuAD paragraphs and questions, GSM8K train, MultiRC passages; or any .txt /
.jsonl file, or an HF dataset) and makes examples of one context chunk and N
independent segments. Fine-tuning builds shared-context QA from the suites
themselves (`pmbench.suites`), so the prompts and token ids are exactly those the
evaluation feeds, with the reference answer (`gold_output`) as the response.

Every batch is a function of (seed, step, micro-batch, process): a resumed run sees the
same data as an uninterrupted one, with no data-loader state to save.

The split is by document, decided before anything is trained and written into the
training record: SQuAD holds out its first `heldout_articles` articles of
dev-v1.1 (the ones `pmbench run --suite squad --limit K` evaluates, in data order), and
their titles are recorded so an evaluation can prove it never saw them in training.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Protocol

from pmbench.errors import BadInput
from pmbench.safe_io import read_jsonl
from pmbench.suites import suite_info
from pmbench.suites.data import DATA_ENV, local_roots
from pmbench.train.data import Branch, Example

DEFAULT_HELDOUT_ARTICLES = 8
GSM8K_HELDOUT = 200  # about this many last GSM8K train problems are held out (see gsm8k_cut)
# The benchmark files come from the suites' YAML (pmbench.suites.suite_info), not from here.
SQUAD_FILE = suite_info("squad").data_files["eval"]
GSM8K_TRAIN_FILE = suite_info("gsm8k").data_files["shots"]


def multirc_file(split: str) -> str:
    return suite_info("multirc", split=split).data_files["eval"]
HELDOUT_BRANCHES = (1, 2, 4, 8)  # #branch values the held-out loss is reported at


def step_rng(seed: int, *keys: int) -> random.Random:
    """A generator that depends only on (seed, keys): resumable, process-independent."""
    digest = hashlib.sha256(":".join(str(k) for k in (seed, *keys)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def data_root(data_dir: str | Path | None, needs: str = SQUAD_FILE) -> Path:
    """The benchmark data folder (`--data-dir`, then $PMBENCH_DATA) that holds `needs`."""
    for root in local_roots(data_dir):
        if (root / needs).exists():
            return root
    raise BadInput(
        f"no training data: {needs} not found; pass --data-dir DIR or set ${DATA_ENV} "
        "to a folder laid out like ../shared/data"
    )


def squad_heldout_titles(root: Path, k: int) -> list[str]:
    """Titles of the first `k` SQuAD dev articles: never trained on, used for evaluation."""
    articles = json.loads((root / SQUAD_FILE).read_text(encoding="utf-8"))["data"]
    return [a["title"] for a in articles[:k]]


def gsm8k_cut(n_rows: int) -> int:
    """First held-out GSM8K train row: about GSM8K_HELDOUT from the end, on a multiple of
    16, so groups of 1..16 consecutive problems never straddle the cut."""
    return (n_rows - GSM8K_HELDOUT) // 16 * 16


# --- pretraining corpus ---------------------------------------------------------------


@dataclass
class Corpus:
    train: list[str]
    heldout: list[str]
    split: dict[str, Any] = field(default_factory=dict)


def builtin_corpus(data_dir: str | Path | None, heldout_articles: int) -> Corpus:
    """SQuAD paragraphs + questions, GSM8K train, MultiRC passages + questions.

    The held-out side has the same mix (passages and their questions), so training and
    held-out loss measure the same kind of text."""
    root = data_root(data_dir)
    train: list[str] = []
    heldout: list[str] = []
    articles = json.loads((root / SQUAD_FILE).read_text(encoding="utf-8"))["data"]
    for i, art in enumerate(articles):
        docs = heldout if i < heldout_articles else train
        for para in art["paragraphs"]:
            docs.append(para["context"])
            docs.extend(qa["question"] for qa in para["qas"])
    split: dict[str, Any] = {
        "squad": {"file": SQUAD_FILE, "heldout_articles": [a["title"] for a in
                                                           articles[:heldout_articles]],
                  "train_articles": len(articles) - heldout_articles},
    }
    gsm = root / GSM8K_TRAIN_FILE
    if gsm.exists():
        rows = read_jsonl(gsm, follow=True)
        docs = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in rows]
        cut = gsm8k_cut(len(docs))
        train.extend(docs[:cut])
        heldout.extend(docs[cut:])
        split["gsm8k"] = {"file": GSM8K_TRAIN_FILE, "train_rows": f"0..{cut - 1}",
                          "heldout_rows": f"{cut}..{len(docs) - 1}"}
    for name, docs in (("train", train), ("val", heldout)):
        path = root / multirc_file(name)
        if path.exists():
            for row in read_jsonl(path, follow=True):
                docs.append(row["passage"]["text"])
                docs.extend(q["question"] for q in row["passage"]["questions"])
            split.setdefault("multirc", {})["train" if name == "train" else "heldout"] = (
                multirc_file(name))
    return Corpus(train, heldout, split)


def file_corpus(spec: str, heldout_fraction: float = 0.02) -> Corpus:
    """A .txt (documents separated by blank lines), .jsonl ("text" field) or `hf:NAME[:CONFIG]`
    dataset (train split, "text" column); the last `heldout_fraction` of documents is held out."""
    if spec.startswith("hf:"):
        from pmbench.suites.data import load_hub

        name, _, config = spec[3:].partition(":")
        try:
            ds = load_hub(name, config or None, split="train")
        except Exception as exc:  # offline, unknown name: one line for the user
            raise BadInput(f"cannot load dataset {name}: {str(exc).splitlines()[0]}") from None
        if "text" not in ds.column_names:
            raise BadInput(f"dataset {name} has no 'text' column ({ds.column_names})")
        docs = [t for t in ds["text"] if t and t.strip()]
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise BadInput(f"corpus file not found: {spec}")
        if path.suffix == ".jsonl":
            try:
                docs = [r["text"] for r in read_jsonl(path, follow=True) if r.get("text")]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise BadInput(f"{spec}: expected one JSON object with a 'text' field per line"
                               ) from None
        else:
            text = path.read_text(encoding="utf-8")
            docs = [d.strip() for d in text.split("\n\n") if d.strip()]
    if len(docs) < 2:
        raise BadInput(f"corpus {spec} has fewer than 2 documents")
    k = max(1, int(len(docs) * heldout_fraction))
    split = {"corpus": {"source": spec, "documents": len(docs),
                        "heldout": f"last {k} documents"}}
    return Corpus(docs[:-k], docs[-k:], split)


class ExampleSource(Protocol):
    def example(self, rng: random.Random, n_branches: int) -> Example: ...

    def heldout(self, n_branches: int) -> list[Example]: ...


class PretrainSource:
    """Examples of one context chunk and N independent segments, loss on every token.

    Each branch starts with BOS (so the context's last token has one target for all
    branches) and ends with EOS when its document ends inside the segment.
    """

    def __init__(self, corpus: Corpus, tokenizer: Any, context_len: int = 64,
                 segment_len: int = 64, heldout_segments: int = 64):
        self.corpus = corpus
        self.tok = tokenizer
        self.context_len = context_len
        self.segment_len = segment_len
        self.heldout_segments = heldout_segments
        self._encode = lru_cache(maxsize=20000)(self._encode_uncached)

    def _encode_uncached(self, which: str, index: int) -> tuple[int, ...]:
        docs = self.corpus.train if which == "train" else self.corpus.heldout
        return tuple(self.tok.encode(docs[index], add_special_tokens=False))

    def _chunk(self, rng: random.Random, which: str, index: int, length: int) -> list[int]:
        ids = self._encode(which, index)
        start = rng.randrange(max(1, len(ids) - length + 1))
        chunk = list(ids[start:start + length])
        if start + length >= len(ids):
            chunk.append(self.tok.eos_token_id)
        return chunk

    def _segment(self, rng: random.Random, which: str, index: int) -> Branch:
        return Branch([self.tok.bos_token_id],
                      self._chunk(rng, which, index, self.segment_len - 2))

    def example(self, rng: random.Random, n_branches: int) -> Example:
        n = len(self.corpus.train)
        context = self._chunk(rng, "train", rng.randrange(n), self.context_len)
        branches = [self._segment(rng, "train", rng.randrange(n)) for _ in range(n_branches)]
        return Example(context, branches, loss_on="all", source="corpus")

    def heldout(self, n_branches: int) -> list[Example]:
        """The same held-out segments and contexts for every n, grouped n at a time; the
        loss counts branch tokens only, so every n is scored on the same tokens."""
        rng = random.Random(0)
        n_docs = len(self.corpus.heldout)
        picks = [rng.randrange(n_docs) for _ in range(2 * self.heldout_segments)]
        contexts = [self._chunk(rng, "heldout", i, self.context_len)
                    for i in picks[: self.heldout_segments]]
        segments = [self._segment(rng, "heldout", i) for i in picks[self.heldout_segments:]]
        return [Example(contexts[g], segments[s:s + n_branches], loss_on="branches",
                        source="corpus")
                for g, s in enumerate(range(0, len(segments), n_branches))]


def tokenizer_texts(corpus: Corpus, max_chars: int | None) -> list[str]:
    """Training documents for the BPE, up to `max_chars` characters (None = all)."""
    if max_chars is None:
        return corpus.train
    out, total = [], 0
    for doc in random.Random(0).sample(corpus.train, len(corpus.train)):
        out.append(doc)
        total += len(doc)
        if total >= max_chars:
            break
    return out



# --- fine-tuning: shared-context QA from the suites -------------------------------------

FINETUNE_SOURCES = ("squad", "gsm8k", "mmlu")
HELDOUT_QUESTIONS = {"squad": 64, "gsm8k": 16}  # per source, scored at every #branch


def _suite(name: str, tokenizer: Any, data_dir: str | Path | None, branch: int,
           limit: int | None = None) -> Any:
    """The suite's own groups, on its training material: GSM8K's train split (the suite
    evaluates test), MMLU's val split, SQuAD's dev file (split by article)."""
    from pmbench.suites import suite_class, suite_config

    config = suite_config(name)
    split = {"gsm8k": "train", "mmlu": "val"}.get(name)
    if split and split not in config["splits"]:
        config = {**config, "splits": [*config["splits"], split]}
    return suite_class(config)(config, tokenizer, data_dir=data_dir, branch=branch,
                               limit=limit, split=split)


def _question_index(doc_id: str) -> int:
    return int(doc_id.rsplit("/", 1)[-1])


class SuiteQASource:
    """Shared-context QA built from suite groups: the question prompt is the branch
    prompt, the suite's reference answer (`gold_output`) plus EOS its response (no EOS
    for one-token multiple-choice answers, which are scored from the first step).

    SQuAD trains on the dev articles after the first `heldout_articles` and reports
    held-out loss on the first questions of those held out; GSM8K trains on its train
    split minus the shots and the last ~200 problems (held out); MMLU trains on val
    with the dev shots as context (its test split stays for evaluation).
    """

    def __init__(self, names: Sequence[str], tokenizer: Any, data_dir: str | Path | None,
                 n_branches: int, heldout_articles: int, max_len: int):
        unknown = [n for n in names if n not in FINETUNE_SOURCES]
        if unknown or not names:
            raise BadInput(f"unknown fine-tuning source(s) {unknown}; valid: "
                           f"{', '.join(FINETUNE_SOURCES)}")
        if "squad" in names and heldout_articles < 1:
            raise BadInput("--heldout-articles must be >= 1: SQuAD evaluation needs unseen "
                           "articles")
        self.names = list(names)
        self.tok = tokenizer
        self.data_dir = data_dir
        self.max_len = max_len
        root = data_root(data_dir)
        self.heldout_titles = squad_heldout_titles(root, heldout_articles)
        gsm = root / GSM8K_TRAIN_FILE
        self.gsm8k_cut = gsm8k_cut(len(read_jsonl(gsm, follow=True))) if "gsm8k" in names else None
        self.n_branches = n_branches

    @cached_property
    def train(self) -> dict[str, list[Example]]:
        """Training examples per source (built on first use: tokenizing takes seconds)."""
        train = {}
        for name in self.names:
            suite = _suite(name, self.tok, self.data_dir, self.n_branches)
            train[name] = self._examples(name, suite, heldout=False)
            if not train[name]:
                raise BadInput(f"fine-tuning source {name} has no training examples")
        return train

    @property
    def split(self) -> dict[str, Any]:
        return self._split_info()

    def _selected(self, name: str, suite: Any, group: Any, q: Any, heldout: bool) -> bool:
        """Is question `q` on the training (heldout=False) or held-out side of the split?"""
        if name == "squad":
            return (group.meta["title"] in self.heldout_titles) == heldout
        if name == "gsm8k":
            i = _question_index(q.doc_id)
            return i >= self.gsm8k_cut if heldout else suite.num_fewshot <= i < self.gsm8k_cut
        return not heldout  # mmlu: all of val trains

    def _examples(self, name: str, suite: Any, heldout: bool) -> list[Example]:
        eos = [] if suite.config.get("max_new_tokens") == 1 else [self.tok.eos_token_id]
        out = []
        for group in suite.groups:
            branches = [
                Branch(list(q.prompt_ids),
                       list(self.tok.encode(q.meta["gold_output"], add_special_tokens=False))
                       + eos)
                for q in group.questions if self._selected(name, suite, group, q, heldout)
            ]
            size = len(group.context_ids)
            while not heldout and branches and size + sum(
                    len(b.prompt) + len(b.response) for b in branches) > self.max_len:
                branches.pop()  # too long for --max-len: drop branches from the end
            if branches:
                out.append(Example(list(group.context_ids), branches, "response", name))
        return out

    def example(self, rng: random.Random, n_branches: int) -> Example:
        return rng.choice(self.train[rng.choice(self.names)])

    def heldout(self, n_branches: int) -> list[Example]:
        """The first held-out questions of each source (the same ones at every n)."""
        out = []
        for name in self.names:
            if name not in HELDOUT_QUESTIONS:
                continue
            limit = HELDOUT_QUESTIONS[name]
            if name == "squad":
                suite = _suite(name, self.tok, self.data_dir, n_branches, limit=limit)
            else:
                suite = _suite(name, self.tok, self.data_dir, n_branches)
            exs = self._examples(name, suite, heldout=True)
            kept, count = [], 0
            for ex in exs:
                ex.branches = ex.branches[: limit - count]
                kept.append(ex)
                count += len(ex.branches)
                if count >= limit:
                    break
            out.extend(kept)
        return out

    def _split_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {}
        for name, exs in self.train.items():
            entry: dict[str, Any] = {"train_groups": len(exs),
                                     "train_questions": sum(len(e.branches) for e in exs)}
            if name == "squad":
                entry.update(file=SQUAD_FILE, heldout_articles=self.heldout_titles,
                             heldout_questions_scored=HELDOUT_QUESTIONS["squad"])
            elif name == "gsm8k":
                entry.update(file=GSM8K_TRAIN_FILE, heldout_rows=f"{self.gsm8k_cut}..",
                             heldout_questions_scored=HELDOUT_QUESTIONS["gsm8k"],
                             note="suite shots (first train rows) are not trained on")
            else:
                entry.update(files="mmlu/val (context: mmlu/dev shots)", heldout=None,
                             note="evaluation uses mmlu/test")
            info[name] = entry
        return info

