"""Raft timing and storage settings, validated once."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RaftSettings"]


@dataclass(frozen=True, slots=True)
class RaftSettings:
    election_timeout_min_s: float = 0.2
    election_timeout_max_s: float = 0.5
    heartbeat_s: float = 0.05
    # A leader that heard from no majority for this long steps down
    # (PySyncObj's leaderFallbackTimeout; its default is 30 s).
    leader_lease_s: float = 1.0
    # When a follower's connection to the leader closes (a killed leader's
    # kernel closes its sockets at once), it elects after this delay plus
    # half the minimum election timeout per follower ranked before it,
    # instead of after a full election timeout of silence. 0: never.
    leader_loss_election_s: float = 0.1
    connection_timeout_s: float = 2.0
    connection_retry_s: float = 0.5
    compaction_min_entries: int = 5000
    compaction_min_time_s: float = 300.0
    fsync: bool = True
    proposal_timeout_s: float = 5.0
    # Group commit (consensus/batching.py): entries in flight before new
    # commands queue up and go out together as one entry.
    pipeline_entries_max: int = 2
    # What Raft frames are sealed with (consensus/peer_frames.py): "aead"
    # (AES-GCM), or "fernet" (PySyncObj's own) while nodes of a release that
    # reads only Fernet are still running; both are always read.
    peer_frames: str = "aead"

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.heartbeat_s <= self.election_timeout_min_s / 3:
            problems.append("heartbeat_s must be > 0 and at most a third of election_timeout_min_s")
        if not self.election_timeout_min_s < self.election_timeout_max_s <= 30:
            problems.append("election_timeout_min_s < election_timeout_max_s <= 30 is required")
        if not self.heartbeat_s * 4 <= self.leader_lease_s <= 4 * self.election_timeout_max_s:
            problems.append("leader_lease_s must be in [4 x heartbeat_s, 4 x election_timeout_max_s]")
        if not 0 <= self.leader_loss_election_s <= self.election_timeout_min_s:
            problems.append("leader_loss_election_s must be in [0, election_timeout_min_s] (0: off)")
        if self.connection_timeout_s <= 0 or self.connection_retry_s <= 0:
            problems.append("connection timeouts must be positive")
        elif self.connection_timeout_s < self.election_timeout_max_s:  # PySyncObj asserts it at start
            problems.append("connection_timeout_s must be at least election_timeout_max_s")
        if self.compaction_min_entries < 10 or self.compaction_min_time_s <= 0:
            problems.append("compaction_min_entries >= 10 and compaction_min_time_s > 0 are required")
        if not 0 < self.proposal_timeout_s <= 120:
            problems.append("proposal_timeout_s must be in (0, 120]")
        if not 1 <= self.pipeline_entries_max <= 1024:
            problems.append("pipeline_entries_max must be in 1..1024")
        if self.peer_frames not in ("aead", "fernet"):
            problems.append('peer_frames must be "aead" or "fernet"')
        if problems:
            raise ValueError("; ".join(problems))
