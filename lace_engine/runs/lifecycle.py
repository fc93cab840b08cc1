"""The run state machine as a pure function: which request leads from which state to which."""

from __future__ import annotations

import enum

from lace_engine.domain import RunState
from lace_engine.errors import FailedPrecondition

S = RunState


class RunAction(enum.StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"


_REQUESTS: dict[tuple[RunAction, RunState], RunState] = {
    (RunAction.PAUSE, S.PENDING): S.PAUSED,
    (RunAction.PAUSE, S.RUNNING): S.PAUSING,
    (RunAction.RESUME, S.PAUSING): S.RUNNING,
    (RunAction.RESUME, S.PAUSED): S.PENDING,
    # A failed run goes on from the IR: what it applied stays, the node that failed is tried again.
    (RunAction.RESUME, S.FAILED): S.PENDING,
    # A reviewed plan is written: the executor that takes it writes the outline as it now is.
    (RunAction.RESUME, S.AWAITING_REVIEW): S.PENDING,
    (RunAction.CANCEL, S.PENDING): S.CANCELLED,
    (RunAction.CANCEL, S.PAUSED): S.CANCELLED,
    (RunAction.CANCEL, S.RUNNING): S.CANCELLING,
    (RunAction.CANCEL, S.PAUSING): S.CANCELLING,
    # Nothing is in flight while a plan awaits review: cancelled at once. Pausing it is refused
    # (it is already stopped and holds no lease), like pausing a PAUSED run.
    (RunAction.CANCEL, S.AWAITING_REVIEW): S.CANCELLED,
}

# Where an executor that (re)takes a run's lease moves it. AWAITING_REVIEW is not here: a run
# waiting for a person holds no lease and no executor takes it, after a crash or restart too.
ON_CLAIM: dict[RunState, RunState] = {
    S.PENDING: S.RUNNING,
    S.RUNNING: S.RUNNING,
    S.PAUSING: S.PAUSED,
    S.CANCELLING: S.CANCELLED,
}

CLAIMABLE = frozenset(ON_CLAIM)

# The active states in which a person may edit the artifact's outline (and none of a run's
# executor writes are possible).
OUTLINE_EDITABLE = frozenset({S.AWAITING_REVIEW})


def on_request(action: RunAction, state: RunState) -> RunState:
    """The state a client request moves a run to; FailedPrecondition when it is illegal now."""
    target = _REQUESTS.get((action, state))
    if target is None:
        allowed = sorted(s.value for (a, s) in _REQUESTS if a is action)
        raise FailedPrecondition(
            f"cannot {action.value} a run that is {state.value}; {action.value} applies to runs that are "
            + ", ".join(allowed),
            reason="ILLEGAL_RUN_TRANSITION",
            metadata={"state": state.value, "action": action.value},
        )
    return target
