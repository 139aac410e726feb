"""The worker's configuration: defaults < file < environment < flags, one clear line on error,
secrets masked when printed."""

import subprocess
import sys

import pytest

from detector.core.config import ConfigError
from detector.settings import load_settings


def write(tmp_path, text):
    path = tmp_path / "worker.toml"
    path.write_text(text)
    return str(path)


def test_defaults_are_production_defaults():
    settings = load_settings(environ={})
    assert settings.kafka.session_timeout_ms == 45_000
    assert settings.topics.mail == "mail-flow" and settings.topics.anomalies == "otp-anomalies"
    assert settings.worker.group_id == "otp-detector" and settings.worker.start_from == "committed"


def test_file_then_environment_then_flags_take_precedence(tmp_path):
    path = write(tmp_path, '[kafka]\nbootstrap_servers = "file:9092"\nclient_id = "from-file"\n'
                           '[model]\nbucket_s = 120\nlong_window_s = 1200\n')
    environ = {"DETECTOR_BOOTSTRAP_SERVERS": "env:9092", "DETECTOR_KAFKA_LINGER_MS": "5",
               "DETECTOR_ALERTS_MIN_FAILURES": "7",
               "DETECTOR_OTP_SENDER_ALLOWLIST": "@a.example, codes@b.example"}
    settings = load_settings(path, environ=environ,
                             overrides={("kafka", "bootstrap_servers"): "flag:9092",
                                        ("worker", "group_id"): None})
    assert settings.kafka.bootstrap_servers == "flag:9092"      # flag beats env beats file
    assert settings.kafka.client_id == "from-file"
    assert settings.kafka.linger_ms == 5
    assert settings.detector.model.bucket_s == 120
    assert settings.detector.alerts.min_failures == 7
    assert settings.detector.otp.sender_allowlist == ("@a.example", "codes@b.example")
    assert settings.worker.group_id == "otp-detector"            # a flag not given changes nothing


@pytest.mark.parametrize("text,words", [
    ("[kafak]\n", "unknown table [kafak]"),
    ("[kafka]\nbootstrap = 'x'\n", "unknown key kafka.bootstrap"),
    ("[kafka]\nsession_timeout_ms = 'soon'\n", "kafka.session_timeout_ms"),
    ("[kafka]\nsecurity_protocol = 'TLS'\n", "kafka.security_protocol"),
    ("[model]\nstep_s = 7\n", "model.bucket_s (60) must be a multiple of model.step_s (7)"),
    ("[model]\nbucket_s = 0\n", "model.bucket_s: must be greater than 0, got 0"),
    ("[model]\nhalf_life_s = 0\n", "model.half_life_s: must be greater than 0"),
    ("[model]\nbucket_s = 61\n", "model.bucket_s (61) must be a multiple of model.step_s (10)"),
    ("[model]\nlong_window_s = 90\n", "model.long_window_s (90) must be a multiple of "
                                       "model.bucket_s (60)"),
    ("[alerts]\nopen_score = inf\n", "alerts.open_score: input should be a finite number"),
    ("[alerts]\nopen_score = nan\n", "alerts.open_score: input should be a finite number"),
    ("[alerts]\nmin_failures = -1\n", "alerts.min_failures: input should be greater than or "
                                       "equal to 0, got -1"),
    ("[worker]\nstart_from = 'yesterday'\n", "worker.start_from: must be earliest, latest, "
                                              "committed or an RFC 3339 time"),
    ("[topics]\nmail = 'mail flow'\n", "topics.mail: 'mail flow' is not a valid topic name"),
    ("[otp]\nsubject_patterns = ['(unclosed']\n", "otp.subject_patterns"),
    ("[topics]\nmail_format = 'exim'\n", "topics.mail_format"),
    ("[kafka]\ntransport = 'librdkafka'\n", "kafka.transport: input should be 'confluent' or "
                                            "'kafka-python', got 'librdkafka'"),
    ("not toml at all [", "worker.toml"),
])
def test_a_bad_config_fails_with_a_message_naming_the_key(tmp_path, text, words):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text), environ={})
    assert words in str(err.value)


def test_the_transport_comes_from_the_environment_too():
    assert load_settings(environ={}).kafka.transport == "confluent"
    settings = load_settings(environ={"DETECTOR_KAFKA_TRANSPORT": "kafka-python"})
    assert settings.kafka.transport == "kafka-python"


def test_secrets_are_masked_in_the_printed_configuration():
    settings = load_settings(environ={"DETECTOR_KAFKA_SASL_PASSWORD": "hunter2",
                                      "DETECTOR_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                                      "DETECTOR_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"})
    described = settings.describe()
    assert described["kafka"]["sasl_password"] == "***"
    assert "hunter2" not in repr(described)
    assert settings.kafka.sasl_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(settings.kafka)


def test_the_run_command_fails_with_one_line_on_a_bad_config(tmp_path):
    done = subprocess.run([sys.executable, "-m", "detector.cli", "run", "--config",
                           write(tmp_path, "[worker]\nidle_timeout_s = -1\n")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "worker.idle_timeout_s" in done.stderr


def test_the_readme_sample_configures_every_command(tmp_path):
    """The README's configuration block, as it is, is accepted whole by every command."""
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    sample = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    path = write(tmp_path, sample)
    settings = load_settings(path, environ={})
    assert settings.kafka.bootstrap_servers == "kafka1:9092,kafka2:9092"
    assert settings.detector.otp.sender_allowlist == ("@accounts.bank.example",
                                                      "codes@id.shop.example")


def test_a_misspelt_environment_variable_is_reported():
    from detector.settings import unknown_environment

    assert unknown_environment({"DETECTOR_MODEL_BUCKETS": "30", "DETECTOR_MODEL_BUCKET_S": "30",
                                "DETECTOR_FROM": "latest", "HOME": "/root"}) == [
        "unknown environment variable DETECTOR_MODEL_BUCKETS: ignored "
        "(did you mean DETECTOR_MODEL_BUCKET_S?)"]


def test_a_field_or_section_added_to_the_core_is_read_with_no_change_here(tmp_path, monkeypatch):
    """The core's tables come from its dataclasses: a new key of a section and a new section
    (as main adds them) are read from the file, the environment and flags, and checked."""
    import dataclasses

    import detector.settings as settings_module
    from detector.core import config as core

    @dataclasses.dataclass(frozen=True, slots=True)
    class SliceConfig:
        fields: tuple[str, ...] = ("resolver",)
        min_attempts: int = 50
        enabled: bool = True

    ModelConfig = dataclasses.make_dataclass(
        "ModelConfig", [("cusum_k", float, dataclasses.field(default=0.5))],
        bases=(core.ModelConfig,), frozen=True)
    DetectorConfig = dataclasses.make_dataclass(
        "DetectorConfig", [("model", ModelConfig, dataclasses.field(default_factory=ModelConfig)),
                           ("slice", SliceConfig, dataclasses.field(default_factory=SliceConfig))],
        bases=(core.DetectorConfig,), frozen=True)
    monkeypatch.setattr(settings_module, "DetectorConfig", DetectorConfig)
    path = write(tmp_path, "[slice]\nmin_attempts = 80\n[model]\ncusum_k = 0.7\n")
    loaded = load_settings(path, environ={"DETECTOR_SLICE_FIELDS": "resolver, tenant"},
                           overrides={("slice", "enabled"): False})
    assert loaded.detector.slice == SliceConfig(("resolver", "tenant"), 80, False)
    assert loaded.detector.model.cusum_k == 0.7 and loaded.detector.model.bucket_s == 60
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "[slice]\nmin_attempts = -3\n"), environ={})
    assert "slice.min_attempts: input should be greater than or equal to 0" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "[slice]\nmin_atempts = 3\n"), environ={})
    assert "unknown key slice.min_atempts" in str(err.value)
