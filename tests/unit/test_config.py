from __future__ import annotations

from pathlib import Path

import pytest

from alloop.config import database_url, load_config, parse_config
from alloop.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "alloop.toml"
    p.write_text(text)
    return p


def test_minimal_config_gets_defaults(tmp_path):
    cfg, _ = load_config(_write(tmp_path, '[project]\nname = "x"\n'))
    assert cfg.strategy.name == "margin"
    assert cfg.connector.name == "oracle"
    assert cfg.loop.batch_size == 20
    assert cfg.project.work_dir == (tmp_path / ".alloop").resolve()
    assert database_url(cfg) == f"sqlite:///{(tmp_path / '.alloop' / 'alloop.db').resolve()}"


def test_wrong_field_is_named_with_a_suggestion(tmp_path):
    p = _write(tmp_path, '[project]\nname = "x"\n[loop]\nbatchsize = 5\n')
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "unknown field 'loop.batchsize'" in msg
    assert "did you mean 'batch_size'" in msg
    assert str(p) in msg


def test_wrong_value_says_what_was_got(tmp_path):
    with pytest.raises(ConfigError, match=r"loop.batch_size: .*greater than or equal to 1.*got 0"):
        load_config(_write(tmp_path, '[project]\nname = "x"\n[loop]\nbatch_size = 0\n'))


def test_missing_name_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="missing required field 'project.name'"):
        load_config(_write(tmp_path, "[project]\nseed = 1\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[project\nname='x'"))


def test_missing_file_tells_how_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="alloop init"):
        load_config(tmp_path / "nope.toml")


def test_labels_validation():
    with pytest.raises(ConfigError, match="duplicates"):
        parse_config({"project": {"name": "x", "labels": ["a", "b", "a"]}})
    with pytest.raises(ConfigError, match="at least 2 labels"):
        parse_config({"project": {"name": "x", "labels": ["a"]}})


def test_env_database_url_wins(tmp_path, monkeypatch):
    cfg, _ = load_config(_write(tmp_path, '[project]\nname = "x"\ndatabase = "sqlite:////tmp/a.db"\n'))
    assert database_url(cfg) == "sqlite:////tmp/a.db"
    monkeypatch.setenv("ALLOOP_DATABASE_URL", "sqlite:////tmp/b.db")
    assert database_url(cfg) == "sqlite:////tmp/b.db"


def test_pool_paths_resolved_relative_to_file(tmp_path):
    cfg, _ = load_config(
        _write(tmp_path, '[project]\nname = "x"\n[pool.source]\ntype = "folder"\npath = "imgs"\n')
    )
    assert cfg.pool.source.path == (tmp_path / "imgs").resolve()


def test_unknown_source_type_lists_choices():
    with pytest.raises(ConfigError) as e:
        parse_config({"project": {"name": "x"}, "pool": {"source": {"type": "ftp"}}})
    assert "folder" in str(e.value) and "bundled" in str(e.value)


def test_relative_paths_in_component_params_resolve_against_the_file(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"x")
    cfg, _ = load_config(_write(tmp_path, '''[project]
name = "x"
[teacher]
name = "predictions"
params = { path = "t.npz" }
[features]
name = "open_clip"
params = { pretrained = "w.pt", model_config = "cfg.json", model = "ViT-B-32" }
[connector]
name = "jsonl"
params = { labels_path = "out/labels.jsonl" }
'''))
    assert cfg.teacher.params["path"] == str((tmp_path / "t.npz").resolve())
    assert cfg.features.params["pretrained"] == str((tmp_path / "w.pt").resolve())
    assert cfg.features.params["model_config"] == str((tmp_path / "cfg.json").resolve())
    assert cfg.features.params["model"] == "ViT-B-32"  # not a path
    assert cfg.connector.params["labels_path"] == str((tmp_path / "out" / "labels.jsonl").resolve())
    cfg, _ = load_config(_write(
        tmp_path, '[project]\nname = "x"\n[features]\nname = "open_clip"\nparams = { pretrained = "openai" }\n'
    ))
    assert cfg.features.params["pretrained"] == "openai"  # a hub tag stays a tag


def test_detection_sections_resolve_and_default_to_no_model(tmp_path):
    (tmp_path / "alloop.toml").write_text(
        '[project]\nname = "d"\ntask = "detection"\n'
        '[pool.source]\ntype = "folder"\npath = "imgs"\nannotations = "truth.json"\n'
        '[proposals]\nsource = "model"\npath = "auto.jsonl"\nmin_score = 0.3\n'
    )
    cfg, _ = load_config(tmp_path)
    assert cfg.learner.name == "none"  # no [learner]: a detection project trains no model
    assert cfg.pool.source.annotations == tmp_path / "truth.json"
    assert cfg.proposals.path == tmp_path / "auto.jsonl" and cfg.proposals.min_score == 0.3


def test_command_learner_runs_next_to_the_project_file(tmp_path):
    (tmp_path / "alloop.toml").write_text(
        '[project]\nname = "d"\ntask = "detection"\n'
        '[learner]\nname = "command"\nparams = { command = "python train.py" }\n'
    )
    cfg, _ = load_config(tmp_path)
    assert cfg.learner.params["cwd"] == str(tmp_path.resolve())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"project": {"name": "c"}, "proposals": {"path": "a.jsonl"}}, "detection projects"),
        ({"project": {"name": "c"}, "pool": {"source": {"type": "folder", "path": "x", "annotations": "t.json"}}},
         "annotations"),
        ({"project": {"name": "d", "task": "detection"}, "proposals": {"source": "file"}}, "needs `path`"),
        ({"project": {"name": "d", "task": "detection"}, "proposals": {"path": "a.jsonl", "min_score": 2}},
         "min_score"),
    ],
)
def test_detection_sections_are_checked(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(data)
