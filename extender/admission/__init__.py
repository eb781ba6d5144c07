"""Admission narrowing: the mutating webhook that pins a new pod to its best nodes."""
