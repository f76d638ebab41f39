"""The registry: where a registration rule goes.

Plain functions, a keyword-only engine (or connection) first, each holding one registration
and its transaction: models and versions (create, patch, delete), maintenance windows, a
version's weights and its reference data set. Rules refuse with domain errors
(app/errors.py); the API maps them to statuses and never decides a rule itself.
"""
