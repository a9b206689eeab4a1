"""recalign: instruction data and alignment harness for LLM recommenders."""
import logging as _logging

__version__ = "0.1.0"

# bitsandbytes announces at import (via peft/trl) that an optional CPU kernel package is
# missing; that is noise on every run, so it is silenced once here.
_logging.getLogger("bitsandbytes").setLevel(_logging.ERROR)
