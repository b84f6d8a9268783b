"""kopf handlers, kept thin: events in, the engine, plans applied, status out."""
