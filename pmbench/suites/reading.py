"""Reading comprehension over documents, 4 options, scored by letter logits like MMLU:
RACE (English exam passages, 3-5 questions each) and QuALITY (long articles, many
questions each), the multi-question sets the ParallelMind paper names as the best fit.

A document is the shared context, once; every question about it is a branch. Groups of
`branch` questions never span two documents (a document's last group may be smaller), so
with --branch at least a document's question count, all of its questions share one group.
Few-shot examples are whole documents of the train split with every question answered.

Data: the hub datasets' own parquet files, read locally (`--data-dir`, `$PMBENCH_DATA`) or
fetched through `datasets` into that same layout. YAML `levels` (RACE: middle, high) are
selected with --subjects; each level names its files by role (`<level>`, `<level>_shots`),
a suite without levels uses `eval` (and `shots`). YAML `breakdown` names the question field
whose values get an accuracy of their own (RACE: level; QuALITY: difficulty, hard or easy).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pmbench.errors import BadInput
from pmbench.safe_io import atomic_write
from pmbench.suites import data
from pmbench.suites.base import TextGroup, TextQuestion, chunks, data_files
from pmbench.suites.choice import ChoiceSuite
from pmbench.suites.metrics import mean
from pmbench.types import Question, QuestionOutput


@dataclass
class Document:
    """One passage or article and its questions (dicts: question, options, answer index,
    and fields of the breakdown, such as difficulty)."""

    doc_id: str
    text: str
    questions: list[dict[str, Any]]
    title: str = ""


class ReadingSuite(ChoiceSuite):
    """Subclasses read a data file into `Document`s (`read_documents`) and say which
    columns that takes (`columns`)."""

    columns: ClassVar[tuple[str, ...]] = ()

    def read_documents(self, rows: Iterable[dict[str, Any]], level: str | None
                       ) -> Iterator[Document]:
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------

    def levels(self) -> list[str | None]:
        """The YAML levels chosen with --subjects (all by default); [None] without levels."""
        known = list(self.config.get("levels") or [])
        if not known:
            return [None]
        unknown = [s for s in self.subjects or [] if s not in known]
        if unknown:
            raise BadInput(f"unknown {self.name} level(s) {', '.join(unknown)}; valid: "
                           f"{', '.join(known)}")
        return [lv for lv in known if not self.subjects or lv in self.subjects]

    def _shots(self, level: str | None) -> list[Document]:
        """The first `num_fewshot` documents of the train split, read no further than needed."""
        if self.num_fewshot == 0:
            return []
        role = f"{level}_shots" if level else "shots"
        if role not in data_files(self.config, self.split):
            raise BadInput(f"suite {self.name} has no few-shot examples (its documents fill "
                           "a model's context alone): drop --num-fewshot")
        shots: list[Document] = []
        for doc in self.read_documents(data.iter_parquet(self.data_path(role), self.columns),
                                       level):
            shots.append(doc)
            if len(shots) == self.num_fewshot:
                return shots
        raise BadInput(f"{self.name} {level or ''}: only {len(shots)} train documents for "
                       f"--num-fewshot {self.num_fewshot}")

    def _format(self, q: dict[str, Any]) -> str:
        letters = dict(zip(self.choices, q["options"], strict=True))
        return self.config["prompt"]["question"].format(question=q["question"].strip(),
                                                        **letters)

    def _context(self, doc: Document) -> str:
        return self.config["prompt"]["context"].format(article=doc.text)

    def text_groups(self) -> Iterator[TextGroup]:
        system = self.config["prompt"].get("description", "")
        for level in self.levels():
            shots = "".join(
                self._context(d) + "".join(self.shot(self._format(q), self.choices[q["answer"]])
                                           for q in d.questions)
                for d in self._shots(level))
            rows = data.read_parquet(self.data_path(level or "eval"), self.columns)
            for doc in self.read_documents(rows, level):
                items = [self._question(doc, i, q, level) for i, q in enumerate(doc.questions)]
                meta = {"document": doc.doc_id, **({"title": doc.title} if doc.title else {})}
                for chunk in chunks(items, self.branch):
                    yield TextGroup(shots + self._context(doc), chunk, system=system,
                                    meta=dict(meta), document=doc.text)

    def _question(self, doc: Document, i: int, q: dict[str, Any], level: str | None
                  ) -> TextQuestion:
        if len(q["options"]) != len(self.choices) or q["answer"] not in range(len(self.choices)):
            raise BadInput(f"{self.name} document {doc.doc_id} question {i}: needs "
                           f"{len(self.choices)} options and an answer among them")
        letter = self.choices[q["answer"]]
        part = self.config["breakdown"]["field"]
        meta = {"document": doc.doc_id, "gold_index": q["answer"],
                part: level if part == "level" else q[part]}
        return TextQuestion(f"{doc.doc_id}/{i}", self._format(q), letter,
                            self.delimiter + letter, meta)

    def score(
        self, question: Question, output: QuestionOutput, *, allow_code_execution: bool = False,
        eos_token_ids: Sequence[int] | None = None,
    ) -> dict[str, Any]:
        fields = super().score(question, output, eos_token_ids=eos_token_ids)
        part = self.config["breakdown"]["field"]
        return {**fields, "document": question.meta["document"], part: question.meta[part]}

    def aggregate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """acc over all questions, acc_<value> per breakdown value (None when absent)."""
        metrics: dict[str, Any] = {"acc": mean(s["acc"] for s in samples),
                                   **self.breakdown(samples)}
        metrics["n"] = len(samples)
        metrics["n_documents"] = len({s["document"] for s in samples})
        return metrics

    @classmethod
    def fetch(cls, config: dict[str, Any], root: Path) -> None:
        """Each level's (hub config's) splits through `datasets`, as the hub's parquet files."""
        for level in config.get("levels") or [None]:
            for split in config["data"]["hub_splits"]:
                pattern = data_files(config, split)[level or "eval"]
                rows = data.load_hub(config["data"]["hub"], level, split)
                path = root / pattern.replace("*", "00000-of-00001")
                atomic_write(path, lambda _, tmp, rows=rows: rows.to_parquet(tmp))


class RaceSuite(ReadingSuite):
    """ehovy/race: one row per question (example_id, article, answer A-D, question, options),
    the rows of a passage next to each other."""

    columns = ("example_id", "article", "answer", "question", "options")

    def read_documents(self, rows: Iterable[dict[str, Any]], level: str | None
                       ) -> Iterator[Document]:
        doc: Document | None = None
        for r in rows:
            if doc is None or r["example_id"] != doc.doc_id:
                if doc is not None:
                    yield doc
                doc = Document(r["example_id"], r["article"], [])
            answer = self.choices.index(r["answer"]) if r["answer"] in self.choices else -1
            doc.questions.append({"question": r["question"], "options": list(r["options"]),
                                  "answer": answer})
        if doc is not None:
            yield doc


class QualitySuite(ReadingSuite):
    """emozilla/quality: one row per question (article, question, options, answer as a
    0-based index, hard); an article's two question sets (two writers) may lie apart, so
    questions are gathered by article, in order of first appearance."""

    columns = ("article", "question", "options", "answer", "hard")

    def read_documents(self, rows: Iterable[dict[str, Any]], level: str | None
                       ) -> Iterator[Document]:
        docs: dict[str, Document] = {}
        for r in rows:
            if r["article"] not in docs:
                title = next((line.strip() for line in r["article"].splitlines()
                              if line.strip()), "")[:60]
                docs[r["article"]] = Document(f"{self.split}/{len(docs)}", r["article"], [],
                                              title)
            docs[r["article"]].questions.append({
                "question": r["question"], "options": list(r["options"]),
                "answer": r["answer"], "difficulty": "hard" if r["hard"] else "easy"})
        yield from docs.values()
