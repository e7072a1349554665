"""The ``reward_model`` reward source: a trained scalar model scores each rollout.

``path`` is an HF folder holding a sequence-classification model with one label, or
``stage:<name>``: the reward model an earlier ``rm`` stage of this run saved in
``runs/<run>/stages/<name>/``. The model reads the rollout's own token ids (prompt + completion, as
generated: no re-tokenization), so it must share the policy's tokenizer, as one trained by the
``rm`` stage does: a model whose saved tokenizer reads any id otherwise is refused when it loads.
The score is the head's value at the last real token, from the attention mask.
"""
from __future__ import annotations

import torch
from pydantic import Field

from feedback_rl import PluginOptions, RewardSource, Rollout, Score, UserError, hookimpl
from feedback_rl.models import load_scalar_model, score_rollouts


class RewardModelSource(RewardSource):
    name = "reward_model"

    class Options(PluginOptions):
        path: str = Field(min_length=1, description="an HF folder, or stage:<name> for an earlier rm stage")
        batch_size: int = Field(32, ge=1)
        device: str = Field("auto", description="auto: CUDA when available, else CPU")

    def __init__(self, options, context):
        super().__init__(options, context)
        self._model = None  # loaded on first use: a `stage:` model exists only once that stage ran

    def model(self) -> torch.nn.Module:
        if self._model is None:
            where = self.context.resolve(self.options.path)
            if not (where / "config.json").is_file():
                hint = " (is there an rm stage of that name before this one?)" if \
                    self.options.path.startswith("stage:") else ""
                raise UserError(f"reward source '{self.context.name}': path: no reward model at {where}{hint}")
            device = self.options.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            try:  # the policy's tokenizer (known during a run): the model must read its ids as it does
                self._model = load_scalar_model(where, device, self.context.tokenizer)
            except UserError as e:
                raise UserError(f"reward source '{self.context.name}': path: {e}") from None
        return self._model

    def describe(self):
        return {"path": self.options.path}

    def score(self, rollouts: list[Rollout]) -> list[Score]:
        return score_rollouts(self.model(), rollouts, self.options.batch_size)

    def close(self):
        self._model = None


@hookimpl
def frl_register_reward_sources(register):
    register(RewardModelSource)
