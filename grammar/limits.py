"""The bounds saga and two-phase commit definitions share, and those of what
both record of a participant call.

saga/limits.py and twopc/limits.py name them again beside their own bounds.
Patterns are matched with `fullmatch`.
"""

from __future__ import annotations

import re

# A saga's or transaction's id, and a registered service's name
# (cluster/stores/registry.py builds its pattern from this one).
WORKFLOW_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
SERVICE_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

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

# What the executor records of each participant call, in the outcome event it
# proposes and so in the workflow's history: the fence it sent
# (Coordinator-Fence, "{term}:{index}": visible ASCII, as a header value is)
# and the call's duration in milliseconds, from the first attempt's start to
# the final outcome, retries and backoff included. Thirty days is beyond any
# retry budget (saga/limits.py: 50 attempts of at most 300 s and 300 s of
# backoff); the executor records a longer call as this.
FENCE_CHARS_MAX = 64
FENCE_PATTERN = re.compile(rf"[!-~]{{1,{FENCE_CHARS_MAX}}}")
CALL_DURATION_MS_MAX = 30 * 24 * 3600 * 1000

# The release a saga or transaction may name: it runs only on workers of that
# release (the executor matches it against [workers] of the cluster file). A
# version string: a letter or digit, then up to 63 of letters, digits and
# ". _ + -" ("2.4.1", "v2.4.1-rc.1+build.7").
RELEASE_CHARS_MAX = 64
RELEASE_PATTERN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._+-]{{0,{RELEASE_CHARS_MAX - 1}}}")
