"""Named bounds for two-phase commit definitions and state.

Every list, string and body a transaction definition carries has a bound
here; input beyond a bound is rejected with a `DefinitionError` naming the
field, never truncated. Patterns are matched with `fullmatch`. The bounds
sagas share (ids, service names, paths, bodies) are grammar/limits.py's,
named here again.
"""

from __future__ import annotations

from coordinator.grammar import limits as shared

TX_ID_PATTERN = shared.WORKFLOW_ID_PATTERN
SERVICE_NAME_PATTERN = shared.SERVICE_NAME_PATTERN
# The release a definition may name: it runs only on workers of that release.
RELEASE_PATTERN = shared.RELEASE_PATTERN

PARTICIPANTS_MIN = 1
PARTICIPANTS_MAX = 16

PATH_CHARS_MAX = shared.PATH_CHARS_MAX
PATH_DECODE_ROUNDS_MAX = shared.PATH_DECODE_ROUNDS_MAX
# A body is measured as compact JSON (UTF-8), as the executor sends it.
BODY_BYTES_MAX = shared.BODY_BYTES_MAX
BODY_DEPTH_MAX = shared.BODY_DEPTH_MAX
BODY_INT_MIN = shared.BODY_INT_MIN
BODY_INT_MAX = shared.BODY_INT_MAX

# What a vote or an acknowledgement may report of the call, recorded in its
# history record (grammar/limits.py): the fence sent and the duration in ms.
FENCE_CHARS_MAX = shared.FENCE_CHARS_MAX
CALL_DURATION_MS_MAX = shared.CALL_DURATION_MS_MAX

TX_TIMEOUT_S_DEFAULT = 10
TX_TIMEOUT_S_MAX = 3600

# History records one transaction can collect: "started"; one "vote" per
# participant; "timed_out"; "decided"; one "acknowledged" per participant;
# "committed" or "aborted". Bounded by construction; the machine checks it.
HISTORY_RECORDS_MAX = 1 + PARTICIPANTS_MAX + 1 + 1 + PARTICIPANTS_MAX + 1
