"""What a fit returns: the :class:`History`, one entry per finished epoch (or L-BFGS
iteration), and the line printed for each."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class History:
    """What happened, one entry per finished epoch."""

    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_score: list = field(default_factory=list)  # accuracy, or R^2 for regression
    seconds: list = field(default_factory=list)
    lr: list = field(default_factory=list)  # the learning rate each epoch ran with
    metrics: dict = field(default_factory=dict)  # "val_<metric>" -> one value per epoch
    best_epoch: int | None = None
    stopped_early: bool = False
    #: L-BFGS: SciPy's exit status (0: converged), its message and the cost ``J`` it ended
    #: at (also when it stopped before a first iteration); None for the minibatch loop
    solver_status: int | None = None
    solver_message: str | None = None
    solver_loss: float | None = None

    @property
    def val_accuracy(self) -> list:
        """The validation accuracy per epoch (R^2 for a regression network)."""
        return self.val_score

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def plot(self, path):
        """Training and validation cost per epoch on one figure, the best epoch marked."""
        from .plots import plot_history

        plot_history(self, path)

    def __len__(self):
        return len(self.epoch)


def format_seconds(seconds: float) -> str:
    """``12.3s``, ``1.23s``, or milliseconds below a second (``45ms``, ``4.5ms``, ``0.45ms``):
    an epoch of a small net takes a few milliseconds, which ``0.00s`` hid."""
    if seconds >= 1:
        return f"{seconds:.3g}s" if seconds < 100 else f"{seconds:.0f}s"
    ms = seconds * 1e3
    if ms < 1:
        return f"{ms:.2f}ms"
    return f"{ms:.1f}ms" if ms < 10 else f"{ms:.0f}ms"


def format_logs(epoch, epochs, logs, task) -> str:
    """``epoch  3/20  loss 0.1234  val_loss 0.2345  val_acc 0.9700  120ms``"""
    parts = [f"epoch {epoch:>{len(str(epochs))}}/{epochs}", f"loss {logs['loss']:.4f}"]
    if "val_loss" in logs:
        score = "val_r2" if task == "regression" else "val_acc"
        parts += [f"val_loss {logs['val_loss']:.4f}", f"{score} {logs['val_score']:.4f}"]
    parts.append(format_seconds(logs["seconds"]))
    return "  ".join(parts)
