"""Adapters from the logs people already have to the contract's records (see ``base``)."""
