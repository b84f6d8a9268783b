"""The operator's side of the mutual-TLS guest agent channel."""
