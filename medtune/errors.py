"""The one error type that means "the user gave us something we cannot use".

Every layer (spec loading, data loaders, configuration dataclasses) raises
:class:`InputError` with a single line naming the problem, the offending value
and the fix. The CLI turns it into that line on stderr and exit status 2,
before any trial starts. It lives in ``trainables`` because that is the lowest
package every other one may import without pulling in Ray.
"""


class InputError(ValueError):
    """Bad user input: a spec, a data folder or a file medtune cannot use.

    The message must be one line: what is wrong, which value, how to fix it.
    """


def did_you_mean(name: object, valid: "list[str] | tuple[str, ...]") -> str:
    """Return `` (did you mean 'x'?)`` for the valid name nearest to ``name``, else ``""``.

    Case is ignored in the comparison (``SCHEDULEFREE`` suggests ``schedulefree``, ``BADGE`` ``badge``), though not in the names.
    """
    import difflib

    folded: dict[str, str] = {}
    for v in valid:
        folded.setdefault(str(v).lower(), str(v))
    text = str(name).lower()
    if text in folded:
        return f" (did you mean {folded[text]!r}?)"
    close = difflib.get_close_matches(text, list(folded), n=1, cutoff=0.5)
    return f" (did you mean {folded[close[0]]!r}?)" if close else ""
