"""Named bounds for two-phase commit definitions and state.

Every list, string and body a transaction definition carries has a bound
here; input beyond a bound is rejected with a `DefinitionError` naming the
field, never truncated. Patterns are matched with `fullmatch`.
"""

from __future__ import annotations

import re

TX_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
SERVICE_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

PARTICIPANTS_MIN = 1
PARTICIPANTS_MAX = 16

PATH_CHARS_MAX = 1024
# A path is percent-decoded this many times when looking for dot segments
# ("%252e" -> "%2e" -> "."): more layers than any server decodes.
PATH_DECODE_ROUNDS_MAX = 4
# A body is measured as compact JSON (UTF-8), as the executor sends it.
BODY_BYTES_MAX = 65536
# Nesting of arrays and objects inside one body.
BODY_DEPTH_MAX = 32
# Integers in a body must fit msgpack's signed 64-bit range (Raft entries).
BODY_INT_MIN = -(2**63)
BODY_INT_MAX = 2**63 - 1

TX_TIMEOUT_S_DEFAULT = 10
TX_TIMEOUT_S_MAX = 3600

# History records one transaction can collect: "started"; one "vote" per
# participant; "timed_out"; "decided"; one "acknowledged" per participant;
# "committed" or "aborted". Bounded by construction; the machine checks it.
HISTORY_RECORDS_MAX = 1 + PARTICIPANTS_MAX + 1 + 1 + PARTICIPANTS_MAX + 1
