"""Where training examples come from, and the recorded train / held-out split.

Pretraining reads a corpus of documents (by default the text in the benchmark data
folder: SQuAD paragraphs and questions, GSM8K train, MultiRC passages; or any .txt /
.jsonl file, or an HF dataset) and makes examples of one context chunk and N
independent segments. Fine-tuning builds shared-context QA from the suites
themselves (`pmbench.suites`), so the prompts and token ids are exactly those the
evaluation feeds, with the reference answer (`gold_output`) as the response; a suite
says which split it trains on and which of its questions are held out
(`pmbench.suites.training`: its YAML `training` and its `Suite.training_split` hook), so
no suite is named here but in the defaults. The benchmark files come from the suites'
YAML too, read when needed (never at import).

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
from pmbench.suites.gsm8k import heldout_cut
from pmbench.suites.training import HELDOUT, TRAIN, TrainingPlan, TrainingSplit, training_plan
from pmbench.train.data import Branch, Example

DEFAULT_HELDOUT_ARTICLES = 8
HELDOUT_SEGMENTS = 64  # pretraining's held-out segments (--heldout-segments)
HELDOUT_BRANCHES = (1, 2, 4, 8)  # #branch values the held-out loss is reported at


def suite_file(suite: str, role: str = "eval", split: str | None = None) -> str:
    """A benchmark file of `suite` (role `role` of its YAML `data.files`, for `split`)."""
    return suite_info(suite, split=split).data_files[role]


def step_rng(seed: int, *keys: int) -> random.Random:
    """A generator that depends only on (seed, keys): resumable, process-independent."""
    digest = hashlib.sha256(":".join(str(k) for k in (seed, *keys)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def data_root(data_dir: str | Path | None, needs: str | None = None) -> Path:
    """The benchmark data folder (`--data-dir`, then $PMBENCH_DATA) that holds `needs`
    (default: the SQuAD file, the one file the built-in corpus cannot do without)."""
    needs = needs or suite_file("squad")
    for root in local_roots(data_dir):
        if (root / needs).exists():
            return root
    raise BadInput(
        f"no training data: {needs} not found; pass --data-dir DIR or set ${DATA_ENV} "
        "to a folder laid out like ../shared/data"
    )


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
    squad_file = suite_file("squad")
    articles = json.loads((root / squad_file).read_text(encoding="utf-8"))["data"]
    for i, art in enumerate(articles):
        docs = heldout if i < heldout_articles else train
        for para in art["paragraphs"]:
            docs.append(para["context"])
            docs.extend(qa["question"] for qa in para["qas"])
    split: dict[str, Any] = {
        "squad": {"file": squad_file, "heldout_articles": [a["title"] for a in
                                                           articles[:heldout_articles]],
                  "train_articles": len(articles) - heldout_articles},
    }
    gsm8k_file = suite_file("gsm8k", "shots")
    if (root / gsm8k_file).exists():
        rows = read_jsonl(root / gsm8k_file, follow=True)
        docs = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in rows]
        cut = heldout_cut(len(docs))  # as fine-tuning on GSM8K holds out
        train.extend(docs[:cut])
        heldout.extend(docs[cut:])
        split["gsm8k"] = {"file": gsm8k_file, "train_rows": f"0..{cut - 1}",
                          "heldout_rows": f"{cut}..{len(docs) - 1}"}
    for name, docs in (("train", train), ("val", heldout)):
        multirc_file = suite_file("multirc", split=name)
        if (root / multirc_file).exists():
            for row in read_jsonl(root / multirc_file, follow=True):
                docs.append(row["passage"]["text"])
                docs.extend(q["question"] for q in row["passage"]["questions"])
            split.setdefault("multirc", {})["train" if name == "train" else "heldout"] = (
                multirc_file)
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
                 segment_len: int = 64, heldout_segments: int = HELDOUT_SEGMENTS):
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

FINETUNE_SOURCES = ("squad", "gsm8k", "mmlu")  # the default --sources


def check_sources(names: Sequence[str]) -> None:
    """BadInput unless `names` are suites that offer a training split (YAML `training`)."""
    from pmbench.suites import training_suites

    valid = training_suites()
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise BadInput(f"unknown fine-tuning source(s) {unknown}; valid: {', '.join(valid)}")


def _suite(name: str, tokenizer: Any, data_dir: str | Path | None, branch: int,
           limit: int | None = None) -> Any:
    """The suite's own groups on the split its YAML `training` names, which it may not
    evaluate (GSM8K trains on train and evaluates test)."""
    from pmbench.suites import suite_class, suite_config

    config = suite_config(name)
    split = _plan(name).split
    if split not in config["splits"]:
        config = {**config, "splits": [*config["splits"], split]}
    return suite_class(config)(config, tokenizer, data_dir=data_dir, branch=branch,
                               limit=limit, split=split)


def _plan(name: str) -> TrainingPlan:
    """Source `name`'s YAML `training` block (BadInput when it offers none)."""
    from pmbench.suites import suite_config

    plan = training_plan(suite_config(name))
    if plan is None:
        raise BadInput(f"suite {name} offers no training split (its YAML has no `training`)")
    return plan


class SuiteQASource:
    """Shared-context QA built from suite groups: the question prompt is the branch
    prompt, the suite's reference answer (`gold_output`) plus EOS its response (no EOS
    for one-token multiple-choice answers, which are scored from the first step).

    Each source trains on the questions its `Suite.training_split` puts on the training
    side of the split its YAML names, and reports held-out loss on the first
    `heldout_questions` of the held-out side (SQuAD: the first `heldout_articles`
    articles of dev; GSM8K: the last ~200 train problems, never its shots; MMLU: none,
    all of val trains and its test split stays for evaluation).
    """

    def __init__(self, names: Sequence[str], tokenizer: Any, data_dir: str | Path | None,
                 n_branches: int, heldout_articles: int, max_len: int):
        check_sources(names)
        self.names = list(names)
        self.tok = tokenizer
        self.data_dir = data_dir
        self.max_len = max_len
        self.heldout_articles = heldout_articles
        self.n_branches = n_branches
        self.plans = {name: _plan(name) for name in self.names}
        self._splits: dict[str, TrainingSplit] = {}

    def _split_of(self, name: str, suite: Any) -> TrainingSplit:
        """Source `name`'s split, from the first of its suites built (the same for all)."""
        if name not in self._splits:
            self._splits[name] = suite.training_split(self.heldout_articles)
        return self._splits[name]

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

    def _examples(self, name: str, suite: Any, heldout: bool) -> list[Example]:
        side, wanted = self._split_of(name, suite).side, HELDOUT if heldout else TRAIN
        eos = [] if suite.config.get("max_new_tokens") == 1 else [self.tok.eos_token_id]
        out = []
        for group in suite.groups:
            branches = [
                Branch(list(q.prompt_ids),
                       list(self.tok.encode(q.meta["gold_output"], add_special_tokens=False))
                       + eos)
                for q in group.questions if side(group, q) == wanted
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
            plan = self.plans[name]
            limit = plan.heldout_questions
            if not limit:
                continue
            suite = _suite(name, self.tok, self.data_dir, n_branches,
                           limit=limit if plan.heldout_first else None)
            kept, count = [], 0
            for ex in self._examples(name, suite, heldout=True):
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
                                     "train_questions": sum(len(e.branches) for e in exs),
                                     **self._splits[name].record}
            if self.plans[name].heldout_questions:
                entry["heldout_questions_scored"] = self.plans[name].heldout_questions
            info[name] = entry
        return info
