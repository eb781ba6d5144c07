"""Open mHealth consolidator: a patient's BLE heart-rate strap -> Open mHealth batches.

The paper's "data reader container" plus its consolidation, run on the gateway nearest
to the patient so that minute summaries, not every beat, go to the cloud. See README.md
next to the Dockerfile.
"""
