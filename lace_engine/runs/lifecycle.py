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
    (RunAction.CANCEL, S.PENDING): S.CANCELLED,
    (RunAction.CANCEL, S.PAUSED): S.CANCELLED,
    (RunAction.CANCEL, S.RUNNING): S.CANCELLING,
    (RunAction.CANCEL, S.PAUSING): S.CANCELLING,
}

# Where an executor that (re)takes a run's lease moves it.
ON_CLAIM: dict[RunState, RunState] = {
    S.PENDING: S.RUNNING,
    S.RUNNING: S.RUNNING,
    S.PAUSING: S.PAUSED,
    S.CANCELLING: S.CANCELLED,
}

CLAIMABLE = frozenset(ON_CLAIM)


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
