"""kubectl-guestha: status, switch, freeze and clear from the command line."""
