"""SQuAD v1.1 / v2.0: extractive QA over Wikipedia paragraphs, F1 and EM.

Groups hold `branch` questions about one paragraph. When a paragraph runs out of
questions before the group is full, the shared context grows with the next
paragraphs of the same article until it holds `branch` (the last group of an
article may be smaller). v2.0 files add unanswerable questions ("answers": []).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pmbench.suites import data
from pmbench.suites.base import Suite, TextGroup, TextQuestion, data_files
from pmbench.suites.metrics import NO_ANSWER, mean, normalize_answer, squad_scores
from pmbench.types import Question, QuestionOutput


class SquadSuite(Suite):
    def text_groups(self) -> Iterator[TextGroup]:
        with open(self.data_path("eval"), encoding="utf-8") as f:
            articles = json.load(f)["data"]
        for article in articles:
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

    def score(
        self, question: Question, output: QuestionOutput, *, allow_code_execution: bool = False,
        eos_token_ids: Sequence[int] | None = None,
    ) -> dict[str, Any]:
        prediction = self.answer_text(output, eos_token_ids).strip()
        em, f1 = squad_scores(question.target, prediction)
        has_answer = any(normalize_answer(g) for g in question.target)
        return {"target": question.target, "prediction": prediction, "em": em, "f1": f1,
                "has_answer": has_answer, "score": f1}

    def aggregate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        metrics: dict[str, Any] = {
            "f1": mean(s["f1"] for s in samples), "em": mean(s["em"] for s in samples),
            "n": len(samples),
        }
        if self.config.get("version") == 2 or not all(s["has_answer"] for s in samples):
            for key, flag in (("has_ans", True), ("no_ans", False)):
                part = [s for s in samples if s["has_answer"] == flag]
                metrics[f"{key}_f1"] = mean(s["f1"] for s in part) if part else None
                metrics[f"{key}_em"] = mean(s["em"] for s in part) if part else None
                metrics[f"{key}_n"] = len(part)
        return metrics

    @classmethod
    def fetch(cls, config: dict[str, Any], root: Path) -> None:
        """Rebuild the official nested json from the hub's flat rows (one row per question)."""
        version2 = config.get("version") == 2
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
        data.write_text(root / data_files(config)["eval"], json.dumps(doc))
