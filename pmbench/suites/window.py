"""A group against the model's context window: how many positions it needs, the one line
that refuses it, and the cut of its document that makes it fit (--truncate-documents).

Every method reads a group the same way as far as positions go: the shared context once,
then one question and its answer. rope2d packs all branches into one sequence, but each
branch's time positions continue from the end of the context (DESIGN, 2D positions), so
the largest position any method uses is context + longest question + answer tokens; the
branches add KV-cache memory, not positions.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pmbench.errors import BadInput
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


def fit(suite: Any, tg: Any, group_id: int) -> Group:
    """The token group of text group `tg` (`suite.token_group`), within the model's context
    window: refused (one line) when it does not fit, or with its document cut from the end
    when the user asked for that (each cut is listed in `suite.truncated`)."""
    group = suite.token_group(tg, group_id)
    limit = suite.context_window
    if limit is None or needed(group, suite.max_new_tokens) <= limit:
        return group
    if not (suite.truncate_documents and tg.document and tg.document in tg.context):
        raise BadInput(too_long(suite, tg, group))
    doc_ids = suite.encode(tg.document)
    keep = len(doc_ids)
    while (excess := needed(group, suite.max_new_tokens) - limit) > 0:
        keep -= excess  # decoding and re-encoding may shift the cut: measure again
        if keep <= 0:
            raise BadInput(too_long(suite, tg, group, even_without_document=True))
        cut = suite.tokenizer.decode(doc_ids[:keep], skip_special_tokens=True)
        head, _, tail = tg.context.rpartition(tg.document)
        group = suite.token_group(replace(tg, context=head + cut + tail), group_id)
    # per group: each group of a document is cut to fit its own longest question
    suite.truncated.append({"group_id": group_id, "document": tg.meta.get("document"),
                            "tokens": len(doc_ids), "kept": keep})
    return group
