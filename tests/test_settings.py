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
    ("[model]\nstep_s = 7\n", "step_s must divide bucket_s"),
    ("[otp]\nsubject_patterns = ['(unclosed']\n", "otp.subject_patterns"),
    ("[topics]\nmail_format = 'exim'\n", "topics.mail_format"),
    ("[kafka]\ntransport = 'librdkafka'\n", "kafka.transport must be one of kafka-python, confluent"),
    ("not toml at all [", "worker.toml"),
])
def test_a_bad_config_fails_with_a_message_naming_the_key(tmp_path, text, words):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text), environ={})
    assert words in str(err.value)


def test_the_transport_comes_from_the_environment_too():
    assert load_settings(environ={}).kafka.transport == "kafka-python"
    settings = load_settings(environ={"DETECTOR_KAFKA_TRANSPORT": "confluent"})
    assert settings.kafka.transport == "confluent"


def test_secrets_are_masked_in_the_printed_configuration():
    settings = load_settings(environ={"DETECTOR_KAFKA_SASL_PASSWORD": "hunter2",
                                      "DETECTOR_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                                      "DETECTOR_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"})
    described = settings.describe()
    assert described["kafka"]["sasl_password"] == "***"
    assert "hunter2" not in repr(described)
    assert settings.kafka.sasl_password == "hunter2"


def test_the_run_command_fails_with_one_line_on_a_bad_config(tmp_path):
    done = subprocess.run([sys.executable, "-m", "detector.cli", "run", "--config",
                           write(tmp_path, "[worker]\nidle_timeout_s = -1\n")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "worker.idle_timeout_s" in done.stderr
