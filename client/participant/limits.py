"""Named bounds of the participant kit.

Every key, body, map and loop the kit keeps has a bound here. Input beyond a
bound is answered 400 with a message naming the bound (a request the
coordinator sent) or refused with 503 (the store or the lock map is full),
never truncated or stored.
"""

from __future__ import annotations

import re

# `Idempotency-Key`: visible ASCII, no spaces. The coordinator's keys are
# `{saga_id}/{step}/{action|compensation}` and
# `{tx_id}/{service}/{prepare|commit|abort}`, far below this.
KEY_CHARS_MAX = 512
KEY_PATTERN = re.compile(rf"[\x21-\x7e]{{1,{KEY_CHARS_MAX}}}")

# `Coordinator-Fence: {term}:{index}`; both fit SQLite's signed 64-bit INTEGER.
FENCE_PATTERN = re.compile(r"([0-9]{1,19}):([0-9]{1,19})")
FENCE_TERM_MAX = 2**63 - 1
FENCE_INDEX_MAX = 2**63 - 1

# One stored answer (the response body replayed for a key), and one request
# body the kit reads itself (2PC prepare).
BODY_BYTES_MAX = 1024 * 1024
CONTENT_TYPE_CHARS_MAX = 256

# Keys (answers, attempt markers) and transactions one store keeps. Answers
# for a key whose attempt is already recorded are always accepted, so a
# handler that ran is never left without its answer for lack of room.
RECORDS_MAX_DEFAULT = 1_000_000
# MemoryStore also bounds the bytes of the bodies it holds.
MEMORY_STORE_BYTES_MAX_DEFAULT = 256 * 1024 * 1024

# Keys with a request in flight (one asyncio.Lock each).
LOCKS_MAX_DEFAULT = 10_000

# Transaction ids the 2PC routes accept (the coordinator's id pattern) and
# service names in a 2PC key.
TX_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# TerminationResolver: endpoints tried, redirects followed per request,
# transactions looked up per round.
ENDPOINTS_MAX = 16
REDIRECTS_MAX = 5
RESOLVE_BATCH_MAX = 100

# Retention of what a store keeps (store.py): answers and attempt markers
# older than this, and 2PC transactions finished (committed, aborted,
# refused) longer ago, are pruned. It must outlast the longest time the
# coordinator may retry one key: a key retried after its answer was pruned
# runs its handler again.
RETENTION_S_DEFAULT = 7 * 24 * 3600.0
# Writes prune at most once per this interval (and always before refusing
# a write for lack of room); one prune deletes at most PRUNE_BATCH_MAX
# rows of each kind (answers, attempt markers, transactions).
PRUNE_INTERVAL_S_DEFAULT = 60.0
PRUNE_BATCH_MAX = 1000
