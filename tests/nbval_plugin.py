"""A pytest plugin (loaded with ``-p tests.nbval_plugin``, see pyproject.toml) for the nbval run.

nbval compares a checked cell's stderr like its stdout. Stderr carries warnings and progress bars,
which are not facts a lesson promises, so both sides drop stderr streams before comparing.
"""

import nbval.plugin

_compare_streams = nbval.plugin.transform_streams_for_comparison


def _without_stderr(outputs):
    kept = [output for output in outputs if not (output.get("output_type") == "stream" and output.get("name") == "stderr")]
    return _compare_streams(kept)


nbval.plugin.transform_streams_for_comparison = _without_stderr
