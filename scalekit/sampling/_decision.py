"""The decision every sampling pipeline returns, able to explain itself."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["SampleDecision"]


class SampleDecision(NamedTuple):
    """The outcome of :meth:`Pipeline.decide <scalekit.sampling.Pipeline.decide>`.

    - ``sampled``: whether the work should run.
    - ``stage``: the name of the gate, sampler, budget or cap that decided: for a
      skip, the stage that skipped; for a sample, the last stage (``""`` for an
      empty pipeline). Skip counters are kept per ``stage``.
    - ``kind``: ``"gate"``, ``"sampler"``, ``"budget"``, ``"cap"`` (``""`` for an
      empty pipeline).
    - ``probability``: the chance this item had of being sampled, as far as the
      pipeline got: the product of the probabilities of the samplers and budgets
      it went through (``0.0`` when a gate or a cap refused it, ``1.0`` if only gates
      ran).
    - ``detail``: a few words on the deciding stage (the budget's counts, the
      cap's retry time), ``""`` when there is nothing to add.
    """

    sampled: bool
    stage: str
    kind: str
    probability: float
    detail: str = ""

    def __bool__(self) -> bool:  # `if pipeline.decide(msg):` reads naturally
        return self.sampled

    def explain(self) -> str:
        """One line for logs, e.g. ``skipped by gate 'long_enough' (p=0)``."""
        what = "sampled" if self.sampled else "skipped"
        if not self.stage:
            text = f"{what} (no stage, p={self.probability:.4g})"
        else:
            verb = "by" if not self.sampled else "after"
            text = f"{what} {verb} {self.kind} {self.stage!r} (p={self.probability:.4g})"
        return f"{text}: {self.detail}" if self.detail else text
