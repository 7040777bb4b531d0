import pytest

from schemas.config import ConfigError, RenderConfig


def test_defaults_validate_and_match_the_paper_setup():
    cfg = RenderConfig().validate()
    assert (cfg.frames, cfg.resolution) == (24, 512)


@pytest.mark.parametrize("kw, msg", [
    ({"frames": 0}, "--frames"),
    ({"resolution": 100}, "--resolution"),
    ({"cam_distance": 1.0}, "too close"),
    ({"clips_per_object": 0}, "--clips"),
    ({"timeout_s": 0}, "--timeout"),
])
def test_bad_values_give_one_line_errors_naming_the_option(kw, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        RenderConfig(**kw).validate()
    assert "\n" not in str(e.value)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown"):
        RenderConfig.from_dict({"frames": 4, "fps": 30})
