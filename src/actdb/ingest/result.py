"""What an ingest returns: per-checkpoint outcomes and a one-paragraph summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["ingested", "resumed", "up-to-date"]


@dataclass(frozen=True)
class CheckpointResult:
    """One checkpoint of an ingest.

    ``rep_ids`` follow the order (site, pooling) of :attr:`IngestResult.sites` x
    :attr:`IngestResult.poolings`. ``start_example``: where the forward pass began
    (> 0 after a resume); ``n_examples_run`` / ``n_tokens``: what it computed.
    """

    checkpoint: str
    step: int | None
    weights_hash: str | None
    duplicate_of: str | None
    status: Status
    rep_ids: tuple[int, ...]
    n_examples_run: int
    start_example: int
    n_tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class IngestResult:
    """The outcome of :func:`actdb.ingest.run`."""

    model: str
    dataset: str
    tokenizer: str
    max_length: int
    n_examples: int
    n_rows: int  # tokens in the token table (padding excluded)
    n_truncated: int
    sites: tuple[str, ...]
    poolings: tuple[str, ...]
    checkpoints: tuple[CheckpointResult, ...]
    run_id: int | None  # None when nothing had to be done
    seconds: float

    @property
    def up_to_date(self) -> bool:
        """True when every rep was already stored (nothing was computed or written)."""
        return all(c.status == "up-to-date" for c in self.checkpoints)

    @property
    def n_tokens(self) -> int:
        return sum(c.n_tokens for c in self.checkpoints)

    @property
    def tokens_per_s(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def rep_ids(self) -> tuple[int, ...]:
        return tuple(r for c in self.checkpoints for r in c.rep_ids)

    @property
    def duplicates(self) -> list[tuple[str, str]]:
        """(checkpoint, earlier checkpoint with identical weights) pairs."""
        return [(c.checkpoint, c.duplicate_of) for c in self.checkpoints if c.duplicate_of]

    def summary(self) -> str:
        n_reps = len(self.sites) * len(self.poolings) * len(self.checkpoints)
        what = (f"{self.model} x {self.dataset}: {len(self.checkpoints)} checkpoint(s), {len(self.sites)} site(s) x "
                f"{len(self.poolings)} pooling(s) = {n_reps} reps; {self.n_examples:,} examples, "
                f"{self.n_rows:,} tokens (max_length {self.max_length}, {self.n_truncated} truncated)")
        if self.up_to_date:
            lines = [f"nothing to do: {what} are already stored"]
        else:
            resumed = [c.checkpoint for c in self.checkpoints if c.status == "resumed"]
            lines = [f"ingested {what} in {self.seconds:.1f} s ({self.tokens_per_s:,.0f} tokens/s)"]
            if resumed:
                lines.append("resumed: " + ", ".join(
                    f"{c.checkpoint} from example {c.start_example}"
                    for c in self.checkpoints if c.status == "resumed"))
            skipped = [c.checkpoint for c in self.checkpoints if c.status == "up-to-date"]
            if skipped:
                lines.append("already stored: " + ", ".join(skipped))
        lines.append("sites: " + ", ".join(self.sites))  # what the patterns matched
        for name, dup in self.duplicates:
            lines.append(f"note: checkpoint {name} has the same weights as {dup}")
        return "\n".join(lines)
