"""A held-out document of the fixture: nothing from here may be mined."""


def clamp_value(v, lo, hi):
    """Limit a value to the range from lo to hi (same code as in shapes.py)."""
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v


def held_only_function(items):
    """Count the items that are truthy, a function only this file has."""
    n = 0
    skipped = 0
    for it in items:
        if it:
            n += 1
        else:
            skipped += 1
    return n, skipped
