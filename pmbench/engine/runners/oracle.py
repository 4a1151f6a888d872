"""oracle: answers every question with its gold target, so every suite must score 100%.

A validation tool, not a decoding method: it checks prompts, answer extraction,
scoring and the sandbox end to end. Each suite puts in `Question.meta["gold_output"]`
what a perfect model would write after the prompt (" B", " <gold span>", the worked
solution ending in "#### 18", the canonical solution code). The oracle returns those
tokens as a runner would (encode, then decode the ids), and for multiple choice sets
the first-step logits to 1 for the token it "wrote" and 0 for the other choices. The
whole gold answer is returned even past max_new_tokens, and no time is spent on a model.
"""

from __future__ import annotations

import time

from pmbench.engine.runners.base import Runner
from pmbench.errors import BadInput
from pmbench.types import GenerationConfig, Group, GroupOutput, QuestionOutput


class OracleRunner(Runner):
    name = "oracle"
    description = "answers with the gold target; every suite must score 100%"
    kind = "validation"
    needs_model = False

    def run_group(self, group: Group, gen: GenerationConfig) -> GroupOutput:
        if self.tokenizer is None:
            raise BadInput("the oracle needs the suite's tokenizer")
        t0 = time.perf_counter()
        outputs = []
        for q in group.questions:
            start = time.perf_counter() - t0
            if "gold_output" not in q.meta:
                raise BadInput(f"question {q.doc_id} has no gold output: the oracle cannot answer")
            ids = list(self.tokenizer.encode(q.meta["gold_output"], add_special_tokens=False))
            logits = None
            if gen.score_token_ids is not None:
                logits = [float(bool(ids) and t == ids[0]) for t in gen.score_token_ids]
            answered = time.perf_counter() - t0  # the whole answer at once
            outputs.append(QuestionOutput(
                output_ids=ids,
                output_text=self.tokenizer.decode(ids, skip_special_tokens=True),
                ttft_s=answered,
                first_logits=logits,
                finish_reason="stop",
                ttlt_s=answered,
                start_s=start,
            ))
        return GroupOutput(outputs, prefill_s=0.0, decode_s=time.perf_counter() - t0)
