"""Reward-model training: a scalar head on a copy of the policy's trunk, fitted to preference pairs.

Bradley-Terry: P(chosen > rejected) = sigmoid(r_chosen - r_rejected), so the loss is
``-log sigmoid(r_c - r_r - m)``, where the margin ``m = margin_coef * margin`` (Llama 2) asks a
clearer preference for a larger gap; ``margin_coef: 0`` is plain Bradley-Terry. A score is the head's
value at the last real token of prompt+completion (found from the attention mask).

The stage trains the ``reward_model`` role and never the policy. The reward model is written, in HF
format (``AutoModelForSequenceClassification``, one label), to ``runs/<run>/stages/<stage>/``, where
a later stage's ``reward_model`` source finds it as ``path: stage:<stage>``.
"""
from __future__ import annotations

from pydantic import Field

from feedback_rl import LengthLimited, Optimizer, hookimpl
from feedback_rl.data import feedback_from_rows
from feedback_rl.losses import bradley_terry_loss
from feedback_rl.models import pair_scores, pairwise_accuracy


class RewardModelTraining(Optimizer):
    name = "rm"
    feedback = "pairs"

    class Options(LengthLimited):
        margin_coef: float = Field(0.0, ge=0.0, description="weight of each pair's margin in the loss (Llama 2)")

    def roles(self):
        return {"reward_model"}

    def prepare(self, batch, models):
        return batch.tokens, batch.margins * self.options.margin_coef

    def loss(self, batch, models):
        tokens, margins = batch
        models.reward_model.train()
        chosen, rejected = pair_scores(models.reward_model, tokens)
        loss = bradley_terry_loss(chosen, rejected, margins)
        chosen, rejected = chosen.detach(), rejected.detach()
        return loss, {"accuracy": float((chosen > rejected).float().mean()),
                      "score/chosen": float(chosen.mean()), "score/rejected": float(rejected.mean()),
                      "score/gap": float((chosen - rejected).mean())}

    def evaluate(self, rows: list[dict], models) -> dict[str, float]:
        """Held-out pairwise accuracy on eval rows with ``chosen``/``rejected`` (for the engine's eval)."""
        if not rows or "chosen" not in rows[0]:
            return {}
        pairs = feedback_from_rows("pairs", rows, models.tokenizer, self.context.system_prompt)
        return {"eval/pairwise_accuracy": pairwise_accuracy(models.reward_model, pairs, models.tokenizer)}

    def trainable(self, models):
        return [models.reward_model]  # the policy is only the trunk the RM starts from

    def stage_output(self, models):
        return models.reward_model


@hookimpl
def frl_register_optimizers(register):
    register(RewardModelTraining)
