"""Public: loss math that several optimizers share, each function tested alone on small tensors."""
from feedback_rl.loop.policy_gradient import clipped_surrogate
from feedback_rl.modeling.roles import bradley_terry_loss

__all__ = ["clipped_surrogate", "bradley_terry_loss"]
