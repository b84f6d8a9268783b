"""The in-guest agent, shipped into guests as one zipapp (standard library only, Python 3.9+)."""
