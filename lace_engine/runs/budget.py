"""A run's hard caps (RunOptions.max_total_tokens, max_llm_calls, max_duration_s) against its calls.

Before a call starts it reserves its whole token budget (the prompt's estimate plus the most its
answer may take) and one call; it may start only if what was spent, what calls in flight reserved
and its own reservation all stay within every cap. When it ends, its reservation is replaced by
what it used. A pure object: the orchestrator holds one per execution and does the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lace_engine.domain import RunOptions


class BudgetExhausted(Exception):
    """A call would cross a cap; `budget` names the option (max_total_tokens, max_llm_calls, max_duration)."""

    def __init__(self, budget: str, message: str):
        super().__init__(message)
        self.budget = budget
        self.message = message


@dataclass(frozen=True, slots=True)
class Reservation:
    tokens: int


class RunBudget:
    """What a run spent and what its calls in flight reserved, against the run's caps."""

    def __init__(self, options: RunOptions, *, tokens_spent: int, calls_made: int, started_at: datetime):
        self.options = options
        self.tokens_spent = tokens_spent
        self.calls_made = calls_made
        self.started_at = started_at
        self.tokens_reserved = 0
        self.calls_reserved = 0

    def reserve(self, tokens: int, now: datetime) -> Reservation:
        """Reserves one call of at most `tokens`; BudgetExhausted when it could cross a cap."""
        o = self.options
        if o.max_llm_calls and self.calls_made + self.calls_reserved + 1 > o.max_llm_calls:
            raise BudgetExhausted("max_llm_calls", f"the run's cap of {o.max_llm_calls} LLM calls is reached "
                                  f"({self.calls_made} made)")
        if o.max_total_tokens and self.tokens_spent + self.tokens_reserved + tokens > o.max_total_tokens:
            raise BudgetExhausted("max_total_tokens", f"the next call may take up to {tokens} tokens, and the run "
                                  f"has {self.tokens_spent} of its cap of {o.max_total_tokens} spent"
                                  + (f" and {self.tokens_reserved} reserved by calls in flight"
                                     if self.tokens_reserved else ""))
        elapsed = (now - self.started_at).total_seconds()
        if o.max_duration_s and elapsed >= o.max_duration_s:
            raise BudgetExhausted("max_duration", f"the run's cap of {o.max_duration_s} s is reached "
                                  f"({elapsed:.0f} s since it started)")
        self.calls_reserved += 1
        self.tokens_reserved += tokens
        return Reservation(tokens)

    def release(self, reservation: Reservation) -> None:
        """The call was not made after all."""
        self.calls_reserved -= 1
        self.tokens_reserved -= reservation.tokens

    def settle(self, reservation: Reservation, tokens_used: int) -> None:
        """The call ended (answered, failed or aborted): what it used replaces what it reserved."""
        self.calls_reserved -= 1
        self.tokens_reserved -= reservation.tokens
        self.calls_made += 1
        self.tokens_spent += tokens_used
