"""The built-in ``environment`` reward source: an episode scored by its environment's own step rewards.

    rewards: {sources: [{name: env, type: environment}]}

An episode's score is the sum of its step rewards (steps without one add nothing; an episode cut by a limit before
any reward scores 0); an episode the environment failed on (it raised) is an error, never a zero; a rollout that
is not an episode, or an episode that ended without any step reward, abstains, so the source mixes with rule and
judge sources.
"""
from __future__ import annotations

from feedback_rl import RewardSource, Rollout, Score, hookimpl


class EnvironmentSource(RewardSource):
    """Scores an episode by the sum of the step rewards its environment gave."""

    name = "environment"

    def score(self, rollouts: list[Rollout]) -> list[Score]:
        return [_score(r) for r in rollouts]


def _score(rollout: Rollout) -> Score:
    episode = rollout.episode
    if episode is None:
        return Score.abstain("not an episode")
    if episode.get("error"):
        return Score.error(f"the environment failed: {episode['error']}")
    rewards = [r for r in episode.get("rewards", []) if r is not None]
    if not rewards and episode.get("truncated"):
        # cut by a limit (context, turns, wall time) before the environment rewarded it: the sum of no step
        # rewards, 0, so a run-away episode is penalised instead of dropping out of its group's reward
        return Score.ok(0.0)
    if not rewards:
        return Score.abstain("the environment gave no step reward")
    return Score.ok(sum(rewards))


@hookimpl
def frl_register_reward_sources(register):
    register(EnvironmentSource)
