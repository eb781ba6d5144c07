"""`cloud4iot explain pod/NAME` (also `kubectl cloud4iot explain`): why a pod is pending,
or why it runs where it runs, and its placement history."""
