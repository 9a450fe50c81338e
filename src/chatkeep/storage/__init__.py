"""Durable storage behind the `storage.base.Store` interface."""
