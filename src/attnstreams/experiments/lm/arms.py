"""The arms of an `lm grid`: a stream (streams.py), a residual (models/residual.py) with no
stream, or STREAM+RESIDUAL, named so that each arm's runs sit in one folder name
(ARM-sSEED) and its reports group them."""

from __future__ import annotations

from attnstreams.models.residual import ResidualConfig
from attnstreams.run.config import ConfigError
from attnstreams.streams import StreamConfig


def arm_name(stream: str, residual: str = "plain") -> str:
    """A grid arm's name: its stream, its residual (models/residual.py) with no stream, or
    STREAM+RESIDUAL; canonical spellings."""
    s, r = StreamConfig.parse(stream).name, ResidualConfig.parse(residual).name
    return s if r == "plain" else r if s == "none" else f"{s}+{r}"


def parse_arm(name: str, residual: str = "plain") -> tuple[str, str]:
    """(stream, residual) of an arm name (`arm_name`'s inverse); an arm that names no
    residual takes `residual`."""
    stream, plus, res = name.strip().partition("+")
    if plus:
        return StreamConfig.parse(stream).name, ResidualConfig.parse(res).name
    try:
        return StreamConfig.parse(name).name, ResidualConfig.parse(residual).name
    except ConfigError as stream_error:
        try:
            return "none", ResidualConfig.parse(name).name
        except ConfigError:
            raise ConfigError(
                f"{stream_error}; nor is {name!r} a residual (denseformer, hc, ...): an arm is "
                "a stream, a residual, or STREAM+RESIDUAL"
            ) from None
