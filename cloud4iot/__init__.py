"""The shared kernel: what both deployables use and neither deploys alone.

The Device contract, the annotation/label vocabulary, the kube client, the task
supervisor, the policy schema and loader and the small HTTP helpers. It imports
neither `extender` nor `gateway_monitor`.
"""
