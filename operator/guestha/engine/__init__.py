"""The pure scheduler: cluster state and a time in, a plan out (standard library only)."""
