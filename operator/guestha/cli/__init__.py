"""kubectl-guestha: status, switch, freeze, unfreeze, clear and events from the command line."""
