"""Errors raised for bad user input: each message names the problem and the fix."""


class ElfsInputError(ValueError):
    """A parameter, view or field that cannot be used; raised before the dataset is changed."""
