"""autopeft's own PEFT methods. Importing this package registers each one with PEFT: one import per method."""

from autopeft.tuners import (
    bitfit,  # noqa: F401
    bottleneck,  # noqa: F401
    composite,  # noqa: F401
    lofit,  # noqa: F401
    prefix,  # noqa: F401
    sparse,  # noqa: F401
)
