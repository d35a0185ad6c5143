"""The Raft edge: a replicated log of msgpack commands on PySyncObj."""

from .codec import (
    COMMAND_FORMAT_VERSION,
    ENTRY_BYTES_MAX,
    Command,
    decode_command,
    encode_command,
    pack,
    pack_to,
    unpack,
)
from .errors import CodecError, ConsensusError, EntryTooLarge, NotLeader, NotWritten, OutcomeUnknown, QueueFull
from .peer_tls import PeerTls
from .port import Applied, LeadershipChange, LogStatus, Rejected, Rejection, ReplicatedLog, Role, StateMachine
from .pysyncobj_log import LogObserver, PySyncObjLog
from .settings import RaftSettings
from .truncations import PYSYNCOBJ_LOGGER, TruncationCounter

__all__ = [
    "COMMAND_FORMAT_VERSION",
    "ENTRY_BYTES_MAX",
    "PYSYNCOBJ_LOGGER",
    "Applied",
    "CodecError",
    "Command",
    "ConsensusError",
    "EntryTooLarge",
    "LeadershipChange",
    "LogObserver",
    "LogStatus",
    "NotLeader",
    "NotWritten",
    "OutcomeUnknown",
    "PeerTls",
    "PySyncObjLog",
    "QueueFull",
    "RaftSettings",
    "Rejected",
    "Rejection",
    "ReplicatedLog",
    "Role",
    "StateMachine",
    "TruncationCounter",
    "decode_command",
    "encode_command",
    "pack",
    "pack_to",
    "unpack",
]
