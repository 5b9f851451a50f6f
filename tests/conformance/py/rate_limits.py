"""Conformance: rate-limit definitions and pauses with the SDK's feature client.

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none python rate_limits.py

- `hatchet.rate_limits.put("conf-py-api", 100, MINUTE)` is accepted (PutRateLimit), and
  again with another limit (a redefinition).
- `hatchet.rate_limits.pause(key, until)` answers when the key is paused until; a second
  pause with an earlier time does not shorten it.
- A limit of 0 is refused with an error that says why.
Prints one `ADZE-RESULT <json>` line.
"""

from __future__ import annotations

import sys
import traceback
from datetime import datetime, timedelta, timezone

from _harness import Checks, Stdout, client, log, start_deadline
from hatchet_sdk.rate_limit import RateLimitDuration

hatchet = client("py/rate_limits.py")


def body(checks: Checks) -> None:
    hatchet.rate_limits.put("conf-py-api", 100, RateLimitDuration.MINUTE)
    checks.check("a limit is defined", True)
    hatchet.rate_limits.put("conf-py-api", 50, RateLimitDuration.SECOND)
    checks.check("and redefined", True)

    later = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)
    until = hatchet.rate_limits.pause("conf-py-api", later)
    checks.observe("paused_until", until.isoformat())
    checks.expect_equal("pause answers its time", until.astimezone(timezone.utc), later)
    again = hatchet.rate_limits.pause("conf-py-api", later - timedelta(minutes=30))
    checks.expect_equal(
        "an earlier pause does not shorten it", again.astimezone(timezone.utc), later
    )

    error: BaseException | None = None
    try:
        hatchet.rate_limits.put("conf-py-api", 0, RateLimitDuration.MINUTE)
    except Exception as e:  # noqa: BLE001 - inspected below
        error = e
    checks.observe("zero_limit_error", None if error is None else str(error)[:300])
    checks.check(
        "a limit of 0 is refused, saying why",
        error is not None and "at least 1" in str(error),
        repr(error),
    )


def main() -> int:
    Stdout.claim()
    checks = Checks("py/rate_limits.py")
    start_deadline(checks)
    try:
        body(checks)
    except Exception as e:  # noqa: BLE001 - every failure becomes a failed check
        log(traceback.format_exc())
        checks.check("no unexpected error", False, f"{type(e).__name__}: {e}")
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
