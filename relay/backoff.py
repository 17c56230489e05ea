"""Exponential backoff with full jitter: the one formula every retry loop in the project uses."""

from __future__ import annotations

import random


def backoff_delay(low: float, high: float, attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): uniform in ``[low, min(high, low * 2^attempt)]``.

    Full jitter keeps many clients that failed together from retrying together.
    """
    ceiling = min(high, low * (2 ** min(attempt, 30)))
    return random.uniform(low, max(low, ceiling))
