"""`python3 -m guestha.agent` runs the agent (the zipapp's __main__ does the same)."""

from __future__ import annotations

import sys

from guestha.agent.main import main

sys.exit(main())
