"""The ``reward_model`` reward source: a trained scalar model scores each rollout.

``path`` is an HF folder holding a sequence-classification model with one label, or
``stage:<name>``: the reward model an earlier ``rm`` stage of this run saved in
``runs/<run>/stages/<name>/``. The model reads the rollout's own token ids (prompt + completion, as
generated: no re-tokenization), so it must share the policy's tokenizer, as one trained by the
``rm`` stage does. The score is the head's value at the last real token, from the attention mask.
"""
from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field

from feedback_rl import PluginOptions, RewardSource, Rollout, Score, UserError, hookimpl, pack

from feedback_rl import load_scalar_model, sequence_scores


class RewardModelSource(RewardSource):
    name = "reward_model"

    class Options(PluginOptions):
        path: str = Field(min_length=1, description="an HF folder, or stage:<name> for an earlier rm stage")
        batch_size: int = Field(32, ge=1)
        device: str = Field("auto", description="auto: CUDA when available, else CPU")

    def __init__(self, options, context):
        super().__init__(options, context)
        self._model = None  # loaded on first use: a `stage:` model exists only once that stage ran

    def location(self) -> Path:
        path = self.options.path
        if path.startswith("stage:"):
            return self.context.run_dir / "stages" / path.split(":", 1)[1]
        return self.context.resolve(path)

    def model(self) -> torch.nn.Module:
        if self._model is None:
            where = self.location()
            if not (where / "config.json").is_file():
                hint = " (is there an rm stage of that name before this one?)" if \
                    self.options.path.startswith("stage:") else ""
                raise UserError(f"reward source '{self.context.name}': path: no reward model at {where}{hint}")
            device = self.options.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            self._model = load_scalar_model(where, device)
        return self._model

    def describe(self):
        return {"path": self.options.path}

    @torch.no_grad()
    def score(self, rollouts: list[Rollout]) -> list[Score]:
        model = self.model()
        device = next(model.parameters()).device
        vocab = model.config.vocab_size
        limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
        out: list[Score | None] = [None] * len(rollouts)
        fit = []
        for k, r in enumerate(rollouts):
            ids = r.prompt_ids + r.completion_ids
            if not ids:
                out[k] = Score.error("empty rollout")
            elif max(ids) >= vocab:
                out[k] = Score.error(f"token id {max(ids)} is outside the reward model's vocabulary ({vocab})")
            elif limit and len(ids) > limit:
                out[k] = Score.error(f"rollout is {len(ids)} tokens; the reward model reads at most {limit}")
            else:
                fit.append(k)
        for start in range(0, len(fit), self.options.batch_size):
            part = fit[start: start + self.options.batch_size]
            # the pad id is irrelevant: the last real token comes from the attention mask
            tokens = pack([rollouts[k].prompt_ids for k in part], [rollouts[k].completion_ids for k in part], 0)
            for k, s in zip(part, sequence_scores(model, tokens.to(device)).tolist()):
                out[k] = Score.ok(s)
        return out

    def close(self):
        self._model = None


@hookimpl
def frl_register_reward_sources(register):
    register(RewardModelSource)
