def broken(:
    """This file does not parse, so it is skipped and counted."""
    return 1
