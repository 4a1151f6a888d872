"""A group against the model's context window: how many positions it needs, and the one
line that refuses it.

Every method reads a group the same way as far as positions go: the shared context once,
then one question and its answer. rope2d packs all branches into one sequence, but each
branch's time positions continue from the end of the context (DESIGN, 2D positions), so
the largest position any method uses is context + longest question + answer tokens; the
branches add KV-cache memory, not positions.
"""

from __future__ import annotations

from typing import Any

from pmbench.types import Group


def needed(group: Group, max_new_tokens: int) -> int:
    """Positions the group's longest question needs: context + question + answer."""
    return len(group.context_ids) + max(len(q.prompt_ids) for q in group.questions) + (
        max_new_tokens)


def too_long(suite: Any, tg: Any, group: Group, even_without_document: bool = False) -> str:
    """One line: which group, how many positions it needs, what the model has, what to do."""
    if "document" in tg.meta:
        title = tg.meta.get("title")
        what = f"document {tg.meta['document']}" + (f" ({title!r})" if title else "")
    else:
        what = f"the group of question {tg.questions[0].doc_id}"
    need = needed(group, suite.max_new_tokens)
    longest = max(len(q.prompt_ids) for q in group.questions)
    head = (f"suite {suite.name}: {what} needs {need} positions (context "
            f"{len(group.context_ids)} + question {longest} + answer {suite.max_new_tokens}) "
            f"but the model reads {suite.context_window}")
    if even_without_document:
        return head + ", even with its document cut to nothing; use a longer-context model"
    if tg.document:
        return head + ("; pass --truncate-documents to cut the document to fit (recorded in "
                       "run.json), or use a longer-context model")
    return head + "; lower --num-fewshot or --max-new-tokens, or use a longer-context model"
