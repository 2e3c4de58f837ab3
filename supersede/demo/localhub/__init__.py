"""Local servers that speak the Hugging Face Hub's API and serve RSS feeds, on loopback.

The offline demo publishes its tiny models and its release feed through them, so the real
``huggingface_hub`` client and feed fetcher run end to end. They serve faithfully and nothing
more: the tests' versions (``tests/support``) add request records and injected failures.
"""
