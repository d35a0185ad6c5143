"""Named bounds and defaults for saga definitions and saga state.

Every list, string, number and body a saga carries has a bound here; input
beyond a bound is rejected with a `DefinitionError` naming the field, never
truncated. Patterns are matched with `fullmatch`. The bounds two-phase
commit shares (ids, service names, paths, bodies) are grammar/limits.py's,
named here again.
"""

from __future__ import annotations

import re

from coordinator.grammar import limits as shared

SAGA_ID_PATTERN = shared.WORKFLOW_ID_PATTERN
STEP_NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
SERVICE_NAME_PATTERN = shared.SERVICE_NAME_PATTERN
SIGNAL_NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
# The release a definition may name: it runs only on workers of that release.
RELEASE_PATTERN = shared.RELEASE_PATTERN

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

SAGA_STEPS_MAX = 64
PATH_CHARS_MAX = shared.PATH_CHARS_MAX
PATH_DECODE_ROUNDS_MAX = shared.PATH_DECODE_ROUNDS_MAX

# Bodies, outputs and signal payloads are measured as compact JSON (UTF-8),
# the form the executor sends and the state stores.
STEP_BODY_BYTES_MAX = shared.BODY_BYTES_MAX
STEP_OUTPUT_BYTES_MAX = 65536
SIGNAL_PAYLOAD_BYTES_MAX = 65536
# Nesting of arrays and objects inside one definition body, and the range of
# its integers.
BODY_DEPTH_MAX = shared.BODY_DEPTH_MAX
BODY_INT_MIN = shared.BODY_INT_MIN
BODY_INT_MAX = shared.BODY_INT_MAX

RETRY_ATTEMPTS_MAX = 50
BACKOFF_S_MAX = 300
STEP_TIMEOUT_S_MAX = 300
AWAIT_TIMEOUT_S_MAX = 30 * 24 * 3600
SAGA_TIMEOUT_S_MAX = 30 * 24 * 3600

# Signals a saga buffers before their await step is reached, over its life.
SIGNALS_MAX = 64
# An error text a participant or the executor reports is kept up to this many
# characters; longer texts are cut and marked " [truncated]".
ERROR_CHARS_MAX = 1024
# What an outcome event may report of the call, recorded in its history
# record (grammar/limits.py): the fence sent and the duration in ms.
FENCE_CHARS_MAX = shared.FENCE_CHARS_MAX
CALL_DURATION_MS_MAX = shared.CALL_DURATION_MS_MAX
# Redrive cycles ("stuck", "redrive", "compensating") recorded in a saga's
# history; later cycles still work and are counted in `redrives`.
REDRIVES_RECORDED_MAX = 16

STEP_TIMEOUT_S_DEFAULT = 5
AWAIT_TIMEOUT_S_DEFAULT = 3600
RETRY_MAX_ATTEMPTS_DEFAULT = 5
RETRY_BACKOFF_S_DEFAULT = 0.1
RETRY_MAX_BACKOFF_S_DEFAULT = 5
COMPENSATION_MAX_ATTEMPTS_DEFAULT = 20
COMPENSATION_BACKOFF_S_DEFAULT = 0.1
COMPENSATION_MAX_BACKOFF_S_DEFAULT = 5


def history_records_max(step_count: int) -> int:
    """The most history records a saga of `step_count` steps can collect.

    "started"; per step one outcome, one delivered "signal" and one
    compensation outcome; "failed"/"timed_out" and "compensating"; one
    "signal" per buffered signal; per recorded redrive cycle "stuck",
    "redrive" and "compensating", plus the last "stuck"; the terminal record.
    """
    per_step = 3 * step_count
    redrive_cycles = 3 * REDRIVES_RECORDED_MAX + 1
    return 1 + per_step + 2 + SIGNALS_MAX + redrive_cycles + 1
