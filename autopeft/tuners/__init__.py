"""autopeft's own PEFT methods. Importing this package registers each one with PEFT: one import per method."""

from autopeft.tuners import bitfit  # noqa: F401
from autopeft.tuners import bottleneck  # noqa: F401
from autopeft.tuners import composite  # noqa: F401
from autopeft.tuners import lofit  # noqa: F401
from autopeft.tuners import prefix  # noqa: F401
from autopeft.tuners import sparse  # noqa: F401
