"""SQuAD v1.1 / v2.0: extractive QA over Wikipedia paragraphs, F1 and EM.

Groups hold `branch` questions about one paragraph. When a paragraph runs out of
questions before the group is full, the shared context grows with the next
paragraphs of the same article until it holds `branch` (the last group of an
article may be smaller). v2.0 files add unanswerable questions ("answers": []).
Fine-tuning on the dev file holds out its first articles, whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pmbench.errors import BadInput
from pmbench.safe_io import atomic_write_text
from pmbench.suites import data
from pmbench.suites.base import Suite, TextGroup, TextQuestion, data_files
from pmbench.suites.metrics import compute
from pmbench.suites.training import HELDOUT, TRAIN, TrainingSplit
from pmbench.types import Group, Question, QuestionOutput

NO_ANSWER = "unanswerable"  # a prediction meaning "no answer", as well as the empty string


def _version2(config: dict[str, Any]) -> bool:
    """Whether the YAML's `version` (of the data) is SQuAD 2.0: unanswerable questions."""
    return str(config.get("version", "")).startswith("2")


class SquadSuite(Suite):
    metric = "squad"

    def _articles(self) -> list[dict[str, Any]]:
        with open(self.data_path("eval"), encoding="utf-8") as f:
            return json.load(f)["data"]

    def text_groups(self) -> Iterator[TextGroup]:
        for article in self._articles():
            passages: list[str] = []
            pending: list[TextQuestion] = []
            for paragraph in article["paragraphs"]:
                qas = [self._question(qa, article["title"]) for qa in paragraph["qas"]]
                if not qas:
                    continue
                passages.append(paragraph["context"])
                while qas:
                    room = self.branch - len(pending)
                    pending, qas = pending + qas[:room], qas[room:]
                    if len(pending) == self.branch:
                        yield self._group(passages, pending, article["title"])
                        pending = []
                        passages = [paragraph["context"]] if qas else []
            if pending:
                yield self._group(passages, pending, article["title"])

    def _group(self, passages: list[str], questions: list[TextQuestion], title: str) -> TextGroup:
        prompt = self.config["prompt"]
        passage = prompt["passage_separator"].join(passages)
        meta = {"title": title, "paragraphs": len(passages)}
        return TextGroup(prompt["context"].format(passage=passage), questions, meta=meta)

    def _question(self, qa: dict[str, Any], title: str) -> TextQuestion:
        golds = [a["text"] for a in qa["answers"]]
        text = self.config["prompt"]["question"].format(question=qa["question"].strip())
        gold = " " + (golds[0] if golds else NO_ANSWER)
        return TextQuestion(qa["id"], text, golds, gold, {"title": title})

    def score_all(
        self, questions: Sequence[Question], outputs: Sequence[QuestionOutput],
        allow_code_execution: bool = False, allow_unisolated_code_execution: bool = False,
        eos_token_ids: Sequence[int] | None = None,
    ) -> list[dict[str, Any]]:
        """A group's answers through the squad metric (pmbench/suites/metrics/squad.py)."""
        predictions = [self.answer_text(o, eos_token_ids).strip() for o in outputs]
        targets = [q.target for q in questions]
        m = compute("squad", predictions=predictions, references=targets, no_answer=NO_ANSWER,
                    per_item=True)
        return [{"target": t, "prediction": p, "em": em, "f1": f1, "has_answer": has, "score": f1}
                for t, p, em, f1, has in zip(targets, predictions, m["exact_match"], m["f1"],
                                             m["has_answer"], strict=True)]

    def aggregate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        m = compute("squad", predictions=[s["prediction"] for s in samples],
                    references=[s["target"] for s in samples], no_answer=NO_ANSWER)
        metrics: dict[str, Any] = {"f1": m["f1"], "em": m["exact_match"], "n": m["total"]}
        if _version2(self.config) or "NoAns_total" in m:
            for key, part in (("has_ans", "HasAns"), ("no_ans", "NoAns")):
                metrics[f"{key}_f1"] = m.get(f"{part}_f1")
                metrics[f"{key}_em"] = m.get(f"{part}_exact_match")
                metrics[f"{key}_n"] = m.get(f"{part}_total", 0)
        return metrics

    def training_split(self, heldout_documents: int) -> TrainingSplit:
        """The first `heldout_documents` articles are held out (those `pmbench run --limit K`
        evaluates, in data order) and the others train; the record names them, so an
        evaluation can prove it never saw them in training."""
        if heldout_documents < 1:
            raise BadInput("--heldout-articles must be >= 1: SQuAD evaluation needs unseen "
                           "articles")
        titles = [a["title"] for a in self._articles()[:heldout_documents]]

        def side(group: Group, question: Question) -> str:
            return HELDOUT if group.meta["title"] in titles else TRAIN

        return TrainingSplit(side, {"file": data_files(self.config, self.split)["eval"],
                                    "heldout_articles": titles})

    @classmethod
    def fetch(cls, config: dict[str, Any], root: Path) -> None:
        """Rebuild the official nested json from the hub's flat rows (one row per question)."""
        version2 = _version2(config)
        articles: list[dict[str, Any]] = []
        for row in data.load_hub(config["data"]["hub"], None, "validation"):
            if not articles or articles[-1]["title"] != row["title"]:
                articles.append({"title": row["title"], "paragraphs": []})
            paragraphs = articles[-1]["paragraphs"]
            if not paragraphs or paragraphs[-1]["context"] != row["context"]:
                paragraphs.append({"context": row["context"], "qas": []})
            answers = row["answers"]
            qa: dict[str, Any] = {
                "answers": [{"answer_start": s, "text": t}
                            for t, s in zip(answers["text"], answers["answer_start"], strict=True)],
                "question": row["question"], "id": row["id"],
            }
            if version2:
                qa["is_impossible"] = not qa["answers"]
            paragraphs[-1]["qas"].append(qa)
        doc = {"version": "v2.0" if version2 else "1.1", "data": articles}
        atomic_write_text(root / data_files(config)["eval"], json.dumps(doc))
