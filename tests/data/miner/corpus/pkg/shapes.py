"""Small geometry helpers (a fixture of tests/mine_instructions_py.rs)."""


def area_of_rectangle(width, height=1.0):
    """Return the area of a rectangle given its width and height.

    Both sides must be non-negative.
    """
    if width < 0 or height < 0:
        raise ValueError("negative side")
    area = width * height
    return area


def clamp_value(v, lo, hi):
    """Clamp v into the closed interval [lo, hi]."""
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v


def count_truthy(items):
    """Count the truthy and falsy items (a near copy of a held-out function)."""
    n = 0
    skipped = 0
    for it in items:
        if it:
            n += 1
        else:
            skipped += 1
    return n, skipped


def tiny(x):
    """Add one."""
    y = x + 1
    z = y
    return z


def test_area():
    """The area of a unit square is one, checked here."""
    assert area_of_rectangle(1, 1) == 1
    assert area_of_rectangle(2, 1) == 2
    assert area_of_rectangle(0, 1) == 0


class Box:
    def __repr__(self):
        """The representation of a box, for debugging only."""
        a = 1
        b = 2
        return "Box()"
