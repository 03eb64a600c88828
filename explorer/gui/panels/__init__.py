"""The tabs and views: what the session shows, each subscribing to its events."""
