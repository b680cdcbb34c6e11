import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

#: a probe writing an undeclared signal or column fails the test that records it
os.environ.setdefault("RNNDOCTOR_SIGNAL_CONTRACT", "raise")
