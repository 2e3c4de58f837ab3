"""Discovery of new foundation models: Hub polling, Hub webhooks and vendor feeds.

Filters out derivatives, pins the revision, dedupes, and publishes ``ModelReleased`` events.
Never imports torch.
"""
