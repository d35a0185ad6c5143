"""The ReplicatedLog on PySyncObj 0.3.17 (its hazards are listed in README.md and below).

- One replicated entry point, ``apply_entry(bytes)``: method ids stay stable.
- Always a journal (:mod:`coordinator.consensus.journal`, msgpack, group-committed fsync) and a full dump
  file written through msgpack hooks (:mod:`coordinator.consensus.snapshot`): no pickle
  in any file, no fork.
- Every frame is sealed with the cluster secret (:mod:`coordinator.consensus.peer_frames`,
  AES-GCM; PySyncObj's ``password`` when the node has no TCP transport of
  ours) and the Raft port binds only the configured address: without both,
  anyone reaching the port runs code.
- ``appendEntriesUseBatch`` is off: no 100 ms wait per sequential write.
- ``leaderFallbackTimeout`` is short: a leader cut off from its peers steps
  down within about two election timeouts.
- Callbacks arrive on PySyncObj's tick thread; results are handed to the
  event loop with ``call_soon_threadsafe``. LEADER_CHANGED, UNKNOWN_OUTCOME
  and timeouts become :class:`OutcomeUnknown`, never "not written".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pysyncobj.syncobj as _syncobj_module
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.node import TCPNode
from pysyncobj.syncobj import _RAFT_STATE
from pysyncobj.transport import TCPTransport

from .applier import STALE_TERM
from .base import LogBase
from .batching import Batcher
from .codec import Command, encode_command, encode_in_term
from .errors import NotLeader, NotWritten, OutcomeUnknown, error_for_fail_reason
from .journal import MsgpackJournal
from .peer_frames import PeerFrames
from .peer_tls import PeerTls, peer_tls_transport
from .port import Applied, LeadershipChange, LogStatus, Rejected, Role, StateMachine
from .raft_guard import guarded_tcp_transport
from .settings import RaftSettings
from .snapshot import SnapshotHooks

__all__ = ["LogObserver", "PySyncObjLog"]

log = logging.getLogger(__name__)
_ROLES = {0: Role.FOLLOWER, 1: Role.CANDIDATE, 2: Role.LEADER}
_LEADER = 2
_SUCCESS = 0
LEADERSHIP_CONFIRM_ATTEMPTS_MAX = 100


@contextlib.contextmanager
def _msgpack_journal(path: str, fsync: bool, created: list, journal_class: type = MsgpackJournal) -> Iterator[None]:
    """Make PySyncObj create our journal for ``path`` while a node is built."""
    original = _syncobj_module.createJournal

    def create(journal_file=None):
        assert journal_file == path, "unexpected journal file"
        journal = journal_class(path, fsync=fsync)
        created.append(journal)
        return journal

    _syncobj_module.createJournal = create
    try:
        yield
    finally:
        _syncobj_module.createJournal = original


KEEPALIVE = "coordinator_keepalive"


def _stale_reset(raft: SyncObj, node, message) -> dict:
    """Keep a stale "reset" answer from moving the leader's nextIndex up.

    PySyncObj 0.3.17 sends a lagging follower several AppendEntries per tick
    when its backlog is over ``appendEntriesBatchSizeBytes`` (64 KB). A
    former leader with uncommitted entries answers the first (term mismatch)
    with reset to ``prevLogIdx`` - right - and the later ones, whose previous
    entry it lacks, with reset to its last index + 1; the leader applies both
    in order, so nextIndex bounces between two values above the point where
    the logs match and the node never catches up (found by the chaos
    partitions; ``tests/integration/test_netns_partition.py``). A reset only
    ever says "go back to at most here", so one above the current nextIndex
    is stale: the leader keeps the lower value.
    """
    if message.get("type") != "next_node_idx" or not message.get("reset") or message.get("success"):
        return message
    current = getattr(raft, "_SyncObj__raftNextIndex", {}).get(node)
    wanted = message.get("next_node_idx")
    if isinstance(current, int) and isinstance(wanted, int) and wanted > current:
        return {**message, "next_node_idx": current}
    return message


def _snapshot_commit(message: dict) -> dict:
    """A snapshot-install message must not advance the follower's commit index.

    PySyncObj 0.3.17 moves a follower's commit index to min(leader commit,
    its own last index) on every ``append_entries`` - also on each chunk of a
    snapshot install, which carries no ``prevLogIdx`` and so checks nothing
    of the follower's log. A former leader holding entries of its old term
    that never committed then applied them (found by the deterministic
    simulation, ``tests/chaos/test_simulation_found_bugs.py``). The commit
    index comes with the next regular AppendEntries, after its log check.
    """
    if message.get("type") == "append_entries" and "serialized" in message and "prevLogIdx" not in message:
        return {**message, "commit_index": 0}
    return message


def _commit_cap(message: dict) -> dict:
    """An AppendEntries may commit no further than its own last entry.

    Raft sets a follower's commit index to min(leaderCommit, index of the
    last new entry); PySyncObj 0.3.17 uses its whole log's last index, which
    was the same thing only because it deleted every entry past the message.
    Our journal keeps entries that do not conflict (consensus/journal.py),
    so the cap is needed: an entry past the message might be one of an old
    term that the leader's log does not hold. Chunks of a snapshot sent in
    pieces ("start", "process") return before the commit index is read."""
    if message.get("type") != "append_entries" or "prevLogIdx" not in message:
        return message
    transmission = message.get("transmission")
    if transmission in ("start", "process"):
        return message
    entries = message.get("entries") or []
    if transmission == "finish":
        last = message["prevLogIdx"] + 1
    else:
        last = entries[-1][1] if entries else message["prevLogIdx"]
    commit = message.get("commit_index")
    if isinstance(commit, int) and isinstance(last, int) and commit > last:
        return {**message, "commit_index": last}
    return message


def _elect_soon_after_leader_loss(raft: SyncObj, node, first_s: float, stagger_s: float) -> None:
    """The connection to ``node`` closed: if it was our leader, elect soon.

    A leader that dies - process killed, host rebooted - closes its TCP
    connections at once, yet PySyncObj's followers wait out a full election
    timeout of silence (0.2-0.5 s) before they stand. Here the follower
    ranked k-th by address among the nodes other than the lost leader
    stands after ``first_s + k * stagger_s``: the first usually wins before
    the next one's deadline (granting a vote resets it), so the followers
    do not split the vote as two random timeouts sometimes do; if the first
    cannot win (its log is behind), the next stands a stagger later. Only
    liveness timing changes; a leader that is alive and reconnects sends a
    heartbeat (every 50 ms) before the deadline and nothing happens. A
    partition closes nothing and keeps the usual timeouts."""
    if raft._SyncObj__raftState != _RAFT_STATE.FOLLOWER or raft._getLeader() != node:
        return
    me = raft._SyncObj__selfNode
    others = sorted(n.id for n in raft._SyncObj__otherNodes if n != node)
    rank = sorted([me.id, *others]).index(me.id)
    deadline = _syncobj_module.monotonicTime() + first_s + rank * stagger_s
    if deadline < raft._SyncObj__raftElectionDeadline:
        raft._SyncObj__raftElectionDeadline = deadline


def _syncing_transport(
    journals: list, settings: RaftSettings, base: type = TCPTransport, peer_tls: PeerTls | None = None
) -> type:
    """A transport that makes appended entries durable before a follower
    acknowledges them (PySyncObj's ``next_node_idx`` answer), guards two
    PySyncObj bugs on the way in (:func:`_stale_reset`, :func:`_snapshot_commit`,
    :func:`_commit_cap` with the journal's truncation only where logs conflict),
    drops keepalives (:meth:`_RaftNode._keepalive`) before PySyncObj sees
    them, and elects soon when the leader's connection closes
    (:func:`_elect_soon_after_leader_loss`). A TCP transport is also
    bounded before its password check (:mod:`coordinator.consensus.raft_guard`)
    and, with ``peer_tls``, speaks mutual TLS (:mod:`coordinator.consensus.peer_tls`)."""
    transport = guarded_tcp_transport(base) if peer_tls is None else peer_tls_transport(base, peer_tls)

    class SyncingTransport(transport):
        def __init__(self, syncObj, selfNode, otherNodes):
            self._coordinator_raft = syncObj
            super().__init__(syncObj, selfNode, otherNodes)

        def setOnMessageReceivedCallback(self, callback):
            if callback is None:  # destroy()
                return super().setOnMessageReceivedCallback(None)
            raft = self._coordinator_raft

            def received(node, message):
                if isinstance(message, dict):
                    if message.get("type") == KEEPALIVE:
                        return  # it did its work on arrival: the connection read something
                    message = _commit_cap(_snapshot_commit(_stale_reset(raft, node, message)))
                try:
                    callback(node, message)
                finally:
                    if journals:
                        journals[0].end_of_message()

            super().setOnMessageReceivedCallback(received)

        def setOnNodeDisconnectedCallback(self, callback):
            first_s = settings.leader_loss_election_s
            if callback is None or not first_s:
                return super().setOnNodeDisconnectedCallback(callback)
            raft, stagger_s = self._coordinator_raft, settings.election_timeout_min_s / 2

            def disconnected(node):
                callback(node)
                _elect_soon_after_leader_loss(raft, node, first_s, stagger_s)

            super().setOnNodeDisconnectedCallback(disconnected)

        def send(self, node, message):
            if journals and message.get("type") == "next_node_idx":
                journals[0].sync()
            return super().send(node, message)

    return SyncingTransport


class _RaftNode(SyncObj):
    def __init__(
        self,
        self_address: str,
        partners: list[str],
        conf: SyncObjConf,
        apply,
        journals: list,
        settings: RaftSettings,
        transport_base: type = TCPTransport,
        node_class: type = TCPNode,
        peer_tls: PeerTls | None = None,
        frames: PeerFrames | None = None,
    ) -> None:
        self._coordinator_apply = apply
        # Set before PySyncObj starts: its transport asks for it as each connection opens.
        self._coordinator_frames = frames
        transport = _syncing_transport(journals, settings, transport_base, peer_tls)
        super().__init__(self_address, partners, conf, nodeClass=node_class, transportClass=transport)
        # The leader counts its own copy toward a commit at the start of a
        # tick: what it appended during a tick is synced at the end of it.
        self.addOnTickCallback(journals[0].sync)
        self._keepalive_s = settings.connection_timeout_s / 4
        self._keepalive_at = 0.0
        self.addOnTickCallback(self._keepalive)

    @property
    def encryptor(self):
        """What every Raft connection seals and opens its frames with
        (:mod:`coordinator.consensus.peer_frames`); PySyncObj's own Fernet
        only when none was given (its ``password`` is then the secret)."""
        if self._coordinator_frames is not None:
            return self._coordinator_frames
        return self._getEncryptor()

    def _keepalive(self) -> None:
        """Send every peer a message four times per connection timeout.

        PySyncObj 0.3.17 drops a connection on which nothing was read for
        ``connectionTimeout`` - checked when something is next *sent* on it,
        and that message is lost with it. Followers never talk to each other,
        so the link between two followers was always stale when one of them
        stood for election: its RequestVote went down with the connection,
        the vote failed, and the next try came an election timeout later on
        a fresh connection (found measuring failover; it also showed as a
        follower's peer flapping between reachable and not)."""
        now = _syncobj_module.monotonicTime()
        if now < self._keepalive_at:
            return
        self._keepalive_at = now + self._keepalive_s
        transport = self._SyncObj__transport
        for node in self._SyncObj__otherNodes:
            transport.send(node, {"type": KEEPALIVE})

    @replicated
    def apply_entry(self, data):
        index = self.raftLastApplied + 1
        return self._coordinator_apply(index, data, self._entry_term(index))

    def _entry_term(self, index: int) -> int | None:
        """The term of the log entry at ``index``, being applied now.

        PySyncObj does not hand it to the replicated method; it is read from
        the log, where the entry being applied always is (only entries past
        the snapshot are applied one by one). The term envelope check needs
        it (:func:`coordinator.consensus.codec.encode_in_term`)."""
        entries = self._SyncObj__getEntries(index, 1)
        if not entries or entries[0][1] != index:
            log.critical("entry %d is being applied but is not in the log", index)
            return None
        return entries[0][2]


class LogObserver(Protocol):
    """Sees what passes through a PySyncObjLog, for the deterministic
    simulation's invariants and trace (chaos/sim/node.py). Each method runs
    before the log acts, on the thread the log acts on."""

    def proposing(self, command: Command) -> None:
        """A command is about to be proposed here (it may still be refused)."""

    def applying(self, index: int, data: bytes) -> None:
        """The entry at ``index`` is about to be applied here."""

    def role_changed(self, old: int, new: int, term: int) -> None:
        """PySyncObj's role changed (0 follower, 1 candidate, 2 leader);
        ``term`` is its current term, -1 before its node exists."""


class PySyncObjLog(LogBase):
    """The log of one node. A real node gives the addresses, the secret,
    the data directory, the state machine and the settings; the other
    arguments are for the deterministic simulation (chaos/sim/node.py):

    - ``journal_class``: the journal PySyncObj is given (the simulation's
      loses what was not synced when its process crashes);
    - ``transport_base`` and ``node_class``: PySyncObj's transport and node
      classes (an in-process network, a node with a stable hash);
    - ``secret`` None: no password, allowed only with a transport that is
      not TCP (nothing reaches its port, and deriving the key costs 100 ms);
    - ``auto_tick`` False: PySyncObj starts no tick thread, the caller ticks
      it (``raft().doTick``); ``poller``: PySyncObj's ``pollerType``;
    - ``observer``: sees proposals, applied entries and role changes;
    - ``on_fatal``: what a snapshot that cannot be loaded does (by default
      the process exits, status 70);
    - ``monotonic``: the clock ``stop`` waits on.

    ``peer_tls`` (a real node's, with ``[tls] peer = true``): every Raft
    connection is mutual TLS as well (:mod:`coordinator.consensus.peer_tls`);
    its ``names`` must give the node id of this node's and every partner's
    address. It applies to a TCP transport only.

    The keepalive and the early election after a leader's connection closes
    (:class:`_RaftNode`, :func:`_elect_soon_after_leader_loss`) read
    PySyncObj's own clock, ``pysyncobj.syncobj.monotonicTime``, on purpose:
    they set and compare PySyncObj's deadlines, which are on that clock (the
    simulation replaces it with the virtual one, chaos/sim/clock.py).
    """

    def __init__(
        self,
        *,
        self_address: str,
        partner_addresses: list[str],
        secret: str | None,
        data_dir: str,
        state_machine: StateMachine,
        settings: RaftSettings | None = None,
        journal_class: type = MsgpackJournal,
        transport_base: type = TCPTransport,
        node_class: type = TCPNode,
        auto_tick: bool = True,
        poller: str = "auto",
        observer: LogObserver | None = None,
        on_fatal: Callable[[str], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        peer_tls: PeerTls | None = None,
    ) -> None:
        super().__init__(state_machine)
        settings = settings if settings is not None else RaftSettings()
        if not secret and issubclass(transport_base, TCPTransport):
            raise ValueError("the Raft port always runs with the cluster secret")
        if peer_tls is not None:
            peer_tls.check_addresses([self_address, *partner_addresses])
        self._peer_tls = peer_tls
        self._self_address = self_address
        self._partners = list(partner_addresses)
        self._secret = secret or None
        self._data_dir = data_dir
        self._settings = settings
        self._journal_class = journal_class
        self._transport_base = transport_base
        self._node_class = node_class
        self._auto_tick = auto_tick
        self._poller = poller
        self._observer = observer
        self._monotonic = monotonic
        self._node: _RaftNode | None = None
        # The term this node leads in, None while it does not: written on
        # PySyncObj's tick thread in the same step as its role (see _send_entry).
        self._leading_term: int | None = None
        self._generation = 0
        self._batcher = Batcher(
            self._send_entry, self.is_leader, lambda: NotLeader(self._leader_address()), settings.pipeline_entries_max
        )
        hooks: dict[str, Any] = {} if on_fatal is None else {"on_fatal": on_fatal}
        self._hooks = SnapshotHooks(
            state_machine.snapshot, state_machine.restore, self._lock, fsync=settings.fsync, **hooks
        )

    # -- lifecycle -----------------------------------------------------------
    def _conf(self) -> SyncObjConf:
        s = self._settings
        return SyncObjConf(
            password=self._secret,
            bindAddress=self._self_address,
            autoTick=self._auto_tick,
            pollerType=self._poller,
            journalFile=os.path.join(self._data_dir, "raft.journal"),
            fullDumpFile=os.path.join(self._data_dir, "raft.snapshot"),
            serializer=self._hooks.serialize,
            deserializer=self._hooks.deserialize,
            useFork=False,
            appendEntriesUseBatch=False,
            raftMinTimeout=s.election_timeout_min_s,
            raftMaxTimeout=s.election_timeout_max_s,
            appendEntriesPeriod=s.heartbeat_s,
            leaderFallbackTimeout=s.leader_lease_s,
            connectionTimeout=s.connection_timeout_s,
            connectionRetryTime=s.connection_retry_s,
            logCompactionMinEntries=s.compaction_min_entries,
            logCompactionMinTime=s.compaction_min_time_s,
            dynamicMembershipChange=False,
            commandsWaitLeader=True,
            onStateChanged=self._on_state_changed,
        )

    async def start(self) -> None:
        """Build the PySyncObj node (with the classes given to the constructor)."""
        self._loop = asyncio.get_running_loop()
        os.makedirs(self._data_dir, exist_ok=True)
        conf = self._conf()
        frames = None
        if self._secret and issubclass(self._transport_base, TCPTransport):
            # The frames are sealed with the secret by PeerFrames, not by the
            # Fernet PySyncObj would derive from the password (a second
            # 100 000-round PBKDF2 at start, and never used).
            frames = PeerFrames(self._secret, self._settings.peer_frames)
            conf.password = None
        journals: list[MsgpackJournal] = []
        with _msgpack_journal(conf.journalFile, self._settings.fsync, journals, self._journal_class):
            self._node = _RaftNode(
                self._self_address,
                self._partners,
                conf,
                self._apply,
                journals,
                self._settings,
                self._transport_base,
                self._node_class,
                self._peer_tls,
                frames,
            )
        self.journal = journals[0]
        self._role_seen: tuple[int, int] | None = None
        self._node.addOnTickCallback(self._watch_role)

    def _watch_role(self) -> None:
        """Each tick (PySyncObj's tick thread): tell the role listeners when
        the role or the term changed. PySyncObj's state callback misses a
        follower moving to a newer leader's term, so both are compared here."""
        node = self._node
        if node is None or not self._role_listeners:
            return
        seen = (int(node._SyncObj__raftState), node.raftCurrentTerm)
        if seen != self._role_seen:
            self._role_seen = seen
            self._emit_role(*seen)

    def raft(self) -> SyncObj | None:
        """The PySyncObj node (None before start and after stop): what a
        caller that ticks it itself (``auto_tick`` False) ticks."""
        return self._node

    def _apply(self, index: int, data: bytes, term: int | None = None) -> Any:
        if self._observer is not None:
            self._observer.applying(index, data)
        return self._apply_entry(index, data, term)

    async def stop(self) -> None:
        node, self._node = self._node, None
        self._leading_term = None
        if node is None:
            return
        node.destroy()
        deadline = self._monotonic() + 3.0
        while node.tick_thread_alive() and self._monotonic() < deadline:
            await asyncio.sleep(0.02)

    # -- proposing -----------------------------------------------------------
    async def propose(self, command: Command, timeout_s: float | None = None) -> Applied | Rejected:
        if self._observer is not None:
            self._observer.proposing(command)
        data = encode_command(command)
        node = self._node
        if node is None or not node._isLeader():
            self.stats.count_proposal("not_written")
            raise NotLeader(self._leader_address())
        future = self._batcher.submit(data)
        try:
            return await self._timed(future, timeout_s or self._settings.proposal_timeout_s)
        finally:
            if not future.done():  # still queued: it will never be sent
                future.cancel()

    def _send_entry(self, data: bytes, on_done) -> None:
        """Hand one entry (plain or batch) to PySyncObj; ``on_done`` runs on the loop.

        The entry goes in the envelope of the term this node leads in. It
        may still sit in PySyncObj's command queue when this node stops
        leading; PySyncObj then keeps it until it knows a leader and forwards
        it there, to be appended long after its proposer was told "outcome
        unknown" and the client retried - a put acknowledged, deleted, then
        put again by the ghost (found by the simulation, seed 1016). The
        envelope makes any later term apply it as a rejection instead.

        The term stamped is the one this node became leader in, recorded
        with the role change on the tick thread - not ``raftCurrentTerm``,
        which PySyncObj raises to a newer leader's term a moment *before* it
        steps down, so a command stamped in that moment would be accepted
        when forwarded to the leader of that newer term."""
        node = self._node
        term = self._leading_term
        if node is None or term is None or not node._isLeader():
            raise NotLeader(self._leader_address())
        loop = self._loop

        def settle(result, error) -> None:
            if error != _SUCCESS:
                on_done(result, error_for_fail_reason(error, self._leader_address()))
            elif isinstance(result, Rejected) and result.code == STALE_TERM:
                on_done(None, NotWritten(f"not written: {result.message}"))
            else:
                on_done(result, None)

        def callback(result, error) -> None:  # PySyncObj's tick thread
            loop.call_soon_threadsafe(settle, result, error)

        node.apply_entry(encode_in_term(term, data), callback=callback)

    # -- leadership ------------------------------------------------------------
    def _on_state_changed(self, old: int, new: int) -> None:  # PySyncObj's tick thread
        loop = self._loop
        node = self._node
        if self._observer is not None:
            self._observer.role_changed(old, new, node.raftCurrentTerm if node is not None else -1)
        term = node.raftCurrentTerm if node is not None else 0
        self._leading_term = term if new == _LEADER and node is not None else None
        if loop is not None:
            loop.call_soon_threadsafe(self._on_role, old, new, term)

    def _on_role(self, old: int, new: int, term: int) -> None:
        self._generation += 1
        if old == _LEADER and new != _LEADER:
            self._batcher.abandon(NotLeader(self._leader_address()), OutcomeUnknown("this node stopped leading"))
            self._emit_leadership(LeadershipChange(False, term))
        if new == _LEADER:
            asyncio.ensure_future(self._confirm_leadership(self._generation, term))

    async def _confirm_leadership(self, generation: int, term: int) -> None:
        """Announce leadership once a barrier of this term committed: by then
        every entry of earlier terms is applied here."""
        for _ in range(LEADERSHIP_CONFIRM_ATTEMPTS_MAX):
            if generation != self._generation or not self.is_leader():
                return
            try:
                index = await self.read_barrier()
            except Exception as exc:  # noqa: BLE001 - retried while still leader
                log.info("leadership barrier at term %d failed: %s", term, exc)
                await asyncio.sleep(self._settings.heartbeat_s)
                continue
            if generation == self._generation and self.is_leader() and self.term() == term:
                log.info("leader at term %d from index %d", term, index)
                self._emit_leadership(LeadershipChange(True, term, index))
            return

    # -- status ----------------------------------------------------------------
    def is_leader(self) -> bool:
        return self._node is not None and self._node._isLeader()

    def term(self) -> int:
        return self._node.raftCurrentTerm if self._node is not None else 0

    def _leader_address(self) -> str | None:
        node = self._node
        leader = node._getLeader() if node is not None else None
        return getattr(leader, "address", None) if leader is not None else None

    def status(self) -> LogStatus:
        node = self._node
        if node is None:
            return LogStatus(Role.FOLLOWER, 0, None, 0, 0, False)
        for _ in range(5):
            try:
                raw = node.getStatus()
                break
            except RuntimeError:  # a dict changed size on the tick thread; read again
                continue
        else:
            raise RuntimeError("could not read the Raft status")
        peers = {address: raw.get(f"partner_node_status_server_{address}") == 2 for address in self._partners}
        return LogStatus(
            role=_ROLES.get(raw["state"], Role.FOLLOWER),
            term=raw["raft_term"],
            leader=self._leader_address(),
            commit_index=raw["commit_idx"],
            applied_index=raw["last_applied"],
            has_quorum=bool(raw["has_quorum"]),
            peers=peers,
        )

    @property
    def snapshots(self) -> SnapshotHooks:
        return self._hooks
