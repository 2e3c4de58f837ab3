"""Where releases are discovered: the Hub (polling), Hub webhooks and vendor feeds."""
